//! The tools' parameters (their JSON schemas are derived from these, doc
//! comments included) and how they map onto API requests.

use std::collections::BTreeMap;

use bothy_api::{
    CheckpointRef, CreateSpriteRequest, SpriteConfig, UpdateSpriteRequest, UrlSettings,
};
use schemars::JsonSchema;
use serde::Deserialize;

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ListArgs {
    /// Only sprites whose names start with this.
    #[serde(default)]
    pub prefix: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CreateArgs {
    /// The new sprite's name: lower-case letters, digits and '-'. A token
    /// limited to a prefix can only create names that start with it.
    pub name: String,
    /// Memory limit in MiB (default: the daemon's).
    #[serde(default)]
    pub ram_mb: Option<u64>,
    /// CPU limit (default: the daemon's).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Disk size in GiB (default 100; only what is written uses space).
    #[serde(default)]
    pub storage_gb: Option<u64>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SpriteArgs {
    /// The sprite's name.
    pub sprite: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct SleepArgs {
    /// The sprite's name.
    pub sprite: String,
    /// Stop it (cold: processes end, nothing held in memory) rather than
    /// freeze it (warm: processes resume where they were).
    #[serde(default)]
    pub cold: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ExecArgs {
    /// The sprite to run in.
    pub sprite: String,
    /// Program and arguments, e.g. ["bash", "-lc", "make test"]; no shell
    /// unless you run one.
    pub cmd: Vec<String>,
    /// Working directory in the sprite.
    #[serde(default)]
    pub dir: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Text fed to the command's standard input (then closed).
    #[serde(default)]
    pub stdin: Option<String>,
    /// Seconds to wait for the command (default 120, at most 3600); past it
    /// the command is killed and what it printed is returned.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CheckpointCreateArgs {
    /// The sprite to checkpoint.
    pub sprite: String,
    /// What this checkpoint is, e.g. "before upgrading postgres".
    #[serde(default)]
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct CheckpointListArgs {
    /// The sprite whose checkpoints to list.
    pub sprite: String,
    /// Also list the automatic checkpoints restores keep of the state they replaced.
    #[serde(default)]
    pub include_auto: bool,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct RestoreArgs {
    /// The sprite to restore.
    pub sprite: String,
    /// The checkpoint id, e.g. "v2" (see checkpoint_list).
    pub checkpoint: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ForkArgs {
    /// The new sprite's name.
    pub name: String,
    /// The sprite the checkpoint belongs to.
    pub from_sprite: String,
    /// The checkpoint id to start from, e.g. "v1".
    pub checkpoint: String,
}

/// Who may open a sprite's URL.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UrlAuth {
    /// Anyone on the internet.
    Public,
    /// Only tokens of the sprite's organisation.
    Sprite,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct UrlAuthArgs {
    /// The sprite whose URL to change.
    pub sprite: String,
    /// "public" (anyone) or "sprite" (tokens of its organisation only).
    pub auth: UrlAuth,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ServiceArgs {
    /// The sprite the service runs in.
    pub sprite: String,
    /// The service's name.
    pub name: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ServiceStopArgs {
    /// The sprite the service runs in.
    pub sprite: String,
    /// The service's name.
    pub name: String,
    /// Seconds to wait after SIGTERM before SIGKILL (default 10).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct ServiceCreateArgs {
    /// The sprite to run the service in.
    pub sprite: String,
    /// The service's name.
    pub name: String,
    /// The program, e.g. "python3".
    pub cmd: String,
    /// Its arguments, e.g. ["-m", "http.server", "8080"].
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment variables.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    /// Working directory.
    #[serde(default)]
    pub dir: Option<String>,
    /// Services that must be started first.
    #[serde(default)]
    pub needs: Vec<String>,
    /// The port this service serves HTTP on: the sprite's URL goes there.
    #[serde(default)]
    pub http_port: Option<u16>,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FsPathArgs {
    /// The sprite.
    pub sprite: String,
    /// An absolute path in the sprite, e.g. "/root/app/main.py".
    pub path: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct FsWriteArgs {
    /// The sprite.
    pub sprite: String,
    /// An absolute path in the sprite; parent directories are created.
    pub path: String,
    /// The file's whole new content (text).
    pub content: String,
    /// Permissions in octal, e.g. "0755" for a script (default "0644").
    #[serde(default)]
    pub mode: Option<String>,
}

/// Longest an exec may be waited for.
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 3600;
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 120;

impl CreateArgs {
    pub fn request(&self) -> CreateSpriteRequest {
        let config = (self.ram_mb.is_some() || self.cpus.is_some() || self.storage_gb.is_some())
            .then(|| SpriteConfig {
                ram_mb: self.ram_mb,
                cpus: self.cpus,
                storage_gb: self.storage_gb,
                ..SpriteConfig::default()
            });
        CreateSpriteRequest {
            name: self.name.clone(),
            config,
            labels: self.labels.clone(),
            ..CreateSpriteRequest::default()
        }
    }
}

impl ForkArgs {
    pub fn request(&self) -> CreateSpriteRequest {
        CreateSpriteRequest {
            name: self.name.clone(),
            from_checkpoint: Some(CheckpointRef {
                sprite: self.from_sprite.clone(),
                checkpoint: self.checkpoint.clone(),
            }),
            ..CreateSpriteRequest::default()
        }
    }
}

impl UrlAuthArgs {
    pub fn request(&self) -> UpdateSpriteRequest {
        let auth = match self.auth {
            UrlAuth::Public => "public",
            UrlAuth::Sprite => "sprite",
        };
        UpdateSpriteRequest {
            url_settings: Some(UrlSettings {
                auth: Some(auth.into()),
                ..UrlSettings::default()
            }),
            ..UpdateSpriteRequest::default()
        }
    }
}

impl ExecArgs {
    /// The command as the exec endpoint takes it, or why it cannot run.
    pub fn params(&self) -> Result<bothy_client::ExecParams, String> {
        match self.cmd.first() {
            None => {
                return Err(
                    "cmd is empty: give the program and its arguments, e.g. [\"ls\", \"-la\"]"
                        .into(),
                )
            }
            Some(p) if p.is_empty() => {
                return Err("cmd[0] is empty: name the program to run".into())
            }
            Some(_) => {}
        }
        if let Some(k) = self
            .env
            .iter()
            .flatten()
            .map(|(k, _)| k)
            .find(|k| k.is_empty() || k.contains('='))
        {
            return Err(format!(
                "env name {k:?} is not valid: names are non-empty and have no '='"
            ));
        }
        let mut p = bothy_client::ExecParams::new(self.cmd.clone());
        p.env = self
            .env
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        p.dir = self.dir.clone().filter(|d| !d.is_empty());
        // Outlive a dropped MCP call only briefly: a killed exec should not
        // leave a runaway process behind.
        p.max_run_after_disconnect = Some("10s".into());
        Ok(p)
    }

    pub fn timeout(&self) -> std::time::Duration {
        let secs = self
            .timeout_secs
            .unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS)
            .clamp(1, MAX_EXEC_TIMEOUT_SECS);
        std::time::Duration::from_secs(secs)
    }
}

impl ServiceCreateArgs {
    /// The service definition `PUT …/services/{name}` takes.
    pub fn definition(&self) -> serde_json::Value {
        let env: BTreeMap<&String, &String> = self.env.iter().flatten().collect();
        serde_json::json!({
            "cmd": self.cmd,
            "args": self.args,
            "env": env,
            "dir": self.dir,
            "needs": self.needs,
            "http_port": self.http_port,
        })
    }
}

/// An octal file mode as the write endpoint takes it (`0644`), or why not.
pub fn file_mode(mode: Option<&str>) -> Result<String, String> {
    let m = mode.unwrap_or("0644").trim();
    let digits = m.strip_prefix("0o").unwrap_or(m);
    match u32::from_str_radix(digits, 8) {
        Ok(v) if v <= 0o7777 && !digits.is_empty() => Ok(format!("{v:04o}")),
        _ => Err(format!(
            "mode {m:?} is not an octal file mode such as \"0644\" or \"0755\""
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(cmd: &[&str]) -> ExecArgs {
        ExecArgs {
            sprite: "s".into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            dir: None,
            env: None,
            stdin: None,
            timeout_secs: None,
        }
    }

    #[test]
    fn exec_maps_argv_dir_and_env() {
        let mut a = exec(&["ls", "-la"]);
        a.dir = Some("/tmp".into());
        a.env = Some(BTreeMap::from([
            ("B".into(), "2".into()),
            ("A".into(), "x=y".into()),
        ]));
        let p = a.params().expect("valid");
        assert_eq!(p.cmd, ["ls", "-la"]);
        assert_eq!(p.dir.as_deref(), Some("/tmp"));
        assert_eq!(
            p.env,
            [
                ("A".to_string(), "x=y".to_string()),
                ("B".into(), "2".into())
            ]
        );
        assert!(!p.tty);
    }

    #[test]
    fn exec_refuses_what_cannot_run() {
        assert!(exec(&[]).params().unwrap_err().contains("cmd is empty"));
        assert!(exec(&[""]).params().is_err());
        let mut a = exec(&["env"]);
        a.env = Some(BTreeMap::from([("A=B".into(), "1".into())]));
        assert!(a.params().unwrap_err().contains("A=B"));
    }

    #[test]
    fn exec_timeout_is_bounded() {
        let mut a = exec(&["true"]);
        assert_eq!(a.timeout().as_secs(), DEFAULT_EXEC_TIMEOUT_SECS);
        a.timeout_secs = Some(0);
        assert_eq!(a.timeout().as_secs(), 1);
        a.timeout_secs = Some(1 << 40);
        assert_eq!(a.timeout().as_secs(), MAX_EXEC_TIMEOUT_SECS);
    }

    #[test]
    fn create_and_fork_requests() {
        let c = CreateArgs {
            name: "mcp-a".into(),
            ram_mb: Some(512),
            cpus: None,
            storage_gb: None,
            labels: None,
        };
        let r = serde_json::to_value(c.request()).expect("json");
        assert_eq!(r["name"], "mcp-a");
        assert_eq!(r["config"]["ram_mb"], 512);
        let bare = CreateArgs { ram_mb: None, ..c };
        assert!(bare.request().config.is_none());

        let f = ForkArgs {
            name: "mcp-b".into(),
            from_sprite: "mcp-a".into(),
            checkpoint: "v1".into(),
        };
        let r = serde_json::to_value(f.request()).expect("json");
        assert_eq!(r["from_checkpoint"]["sprite"], "mcp-a");
        assert_eq!(r["from_checkpoint"]["checkpoint"], "v1");
    }

    #[test]
    fn url_auth_maps_to_url_settings() {
        let a: UrlAuthArgs =
            serde_json::from_value(serde_json::json!({"sprite": "s", "auth": "public"}))
                .expect("valid");
        let r = serde_json::to_value(a.request()).expect("json");
        assert_eq!(r["url_settings"]["auth"], "public");
        assert!(serde_json::from_value::<UrlAuthArgs>(
            serde_json::json!({"sprite": "s", "auth": "open"})
        )
        .is_err());
    }

    #[test]
    fn service_definition_has_the_api_shape() {
        let a = ServiceCreateArgs {
            sprite: "s".into(),
            name: "web".into(),
            cmd: "python3".into(),
            args: vec!["-m".into(), "http.server".into()],
            env: Some(BTreeMap::from([("PORT".into(), "8080".into())])),
            dir: None,
            needs: vec![],
            http_port: Some(8080),
        };
        let d = a.definition();
        assert_eq!(d["cmd"], "python3");
        assert_eq!(d["args"][1], "http.server");
        assert_eq!(d["env"]["PORT"], "8080");
        assert_eq!(d["http_port"], 8080);
    }

    #[test]
    fn file_modes_are_octal() {
        assert_eq!(file_mode(None).as_deref(), Ok("0644"));
        assert_eq!(file_mode(Some("755")).as_deref(), Ok("0755"));
        assert_eq!(file_mode(Some("0o600")).as_deref(), Ok("0600"));
        assert!(file_mode(Some("rwx")).is_err());
        assert!(file_mode(Some("99")).is_err());
        assert!(file_mode(Some("17777")).is_err());
    }
}
