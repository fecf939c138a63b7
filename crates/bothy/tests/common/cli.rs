//! Running a program (usually the `bothy` CLI) with stdin bytes, a deadline, and
//! its stdout and stderr captured separately and byte-exact.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Long enough for a box to boot on a loaded 2-core machine, short enough that a
/// hung CLI fails the test instead of the whole run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What a finished program did.
#[derive(Debug)]
pub struct Output {
    pub what: String,
    /// Exit code; a signal death shows as 128 + signal, like a shell.
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Panics with both streams unless the program exited 0; returns self.
    pub fn assert_success(self, context: &str) -> Self {
        self.assert_code(0, context)
    }

    pub fn assert_code(self, code: i32, context: &str) -> Self {
        assert_eq!(
            self.code,
            code,
            "{context}: `{}` exited {} (wanted {code})\nstdout: {}\nstderr: {}",
            self.what,
            self.code,
            self.stdout_str(),
            self.stderr_str()
        );
        self
    }

    /// The JSON document the program printed on stdout.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "`{}` did not print JSON ({e}): {}\nstderr: {}",
                self.what,
                self.stdout_str(),
                self.stderr_str()
            )
        })
    }
}

/// A program invocation being prepared.
pub struct CliRun {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(String, String)>,
    env_removes: Vec<String>,
    stdin: Option<Vec<u8>>,
    cwd: Option<PathBuf>,
    timeout: Duration,
}

impl CliRun {
    pub fn program(program: impl Into<OsString>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            envs: Vec::new(),
            env_removes: Vec::new(),
            stdin: None,
            cwd: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_removes.push(key.to_string());
        self
    }

    /// Bytes fed to stdin, followed by EOF. Without this, stdin is /dev/null.
    pub fn stdin(mut self, data: Vec<u8>) -> Self {
        self.stdin = Some(data);
        self
    }

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn describe(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        for k in &self.env_removes {
            cmd.env_remove(k);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(dir) = &self.cwd {
            cmd.current_dir(dir);
        }
        cmd
    }

    /// Starts the program in the background with stdin, stdout and stderr on
    /// /dev/null; for sessions a test disconnects on purpose.
    pub fn spawn_detached_io(&self) -> Child {
        self.command()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", self.describe()))
    }

    /// Runs to completion; panics (killing the program) if it outlives the timeout.
    pub fn run(self) -> Output {
        let what = self.describe();
        let mut child = self
            .command()
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));

        let writer = match (child.stdin.take(), self.stdin) {
            (Some(mut pipe), Some(data)) => Some(std::thread::spawn(move || {
                // A program that exits without reading all of stdin closes the pipe;
                // that is its business, the test judges its output.
                let _ = pipe.write_all(&data);
            })),
            _ => None,
        };
        let stdout = child.stdout.take().map(read_all_in_thread);
        let stderr = child.stderr.take().map(read_all_in_thread);

        let status = wait_with_deadline(&mut child, self.timeout);
        if let Some(w) = writer {
            let _ = w.join();
        }
        let stdout = join_reader(stdout);
        let stderr = join_reader(stderr);
        let Some(status) = status else {
            panic!(
                "`{what}` did not finish within {:?}\nstdout so far: {}\nstderr so far: {}",
                self.timeout,
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        };
        Output {
            what,
            code: exit_code(status),
            stdout,
            stderr,
        }
    }
}

fn read_all_in_thread(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_reader(h: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    h.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Waits for `child` to exit; on timeout kills it and returns None.
pub fn wait_with_deadline(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A child process a test started, killed and reaped however the test ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
