//! Tokens as their users meet them: minted with or without an expiry,
//! listed without secrets, revoked (refused from the next call on), scoped
//! to their organisation, the last admin token kept; and a state database
//! of the first schema migrated in place when the daemon starts on it.
//! Expired tokens are made by writing an expiry in the past into the store,
//! so nothing here waits for a clock.

use bothy_api::{CreateTokenRequest, TokenInfo};
use bothy_control::testing::FakeBoxes;
use bothy_control::{hash_token, new_token, Caller, Control, ControlError, NewToken, TokenOwner};

const PAST: &str = "2001-01-01T00:00:00.000Z";

struct Harness {
    control: Control<FakeBoxes>,
    admin_token: String,
    admin: Caller,
}

async fn harness() -> Harness {
    let f = bothy_control::testing::fake_control().await;
    Harness {
        control: f.control,
        admin_token: f.admin_token,
        admin: f.admin,
    }
}

fn member(org: &str) -> Caller {
    Caller(TokenOwner {
        org: org.into(),
        is_admin: false,
        limits: None,
    })
}

fn expiring_in(secs: i64) -> CreateTokenRequest {
    CreateTokenRequest {
        expires_in: Some(secs),
        ..Default::default()
    }
}

impl Harness {
    /// A new token of `org`, minted by the admin: (token, id).
    async fn mint(&self, org: &str) -> (String, String) {
        let made = self
            .control
            .mint_token(&self.admin, org, &CreateTokenRequest::default())
            .await
            .unwrap_or_else(|e| panic!("mint for {org}: {e}"));
        (made.token, made.id)
    }

    async fn ids(&self, caller: &Caller, org: Option<&str>) -> Vec<String> {
        self.control
            .list_tokens(caller, org)
            .await
            .expect("list")
            .into_iter()
            .map(|t| t.id)
            .collect()
    }

    /// The id of the (only) live admin token, from the listing.
    async fn admin_id(&self) -> String {
        let all = self
            .control
            .list_tokens(&self.admin, Some("default"))
            .await
            .expect("list");
        all.into_iter()
            .find(|t| t.is_admin && !t.expired)
            .map(|t| t.id)
            .expect("an admin token is listed")
    }
}

fn assert_unauthorized(got: Result<Caller, ControlError>, says: &str) {
    match got {
        Err(ControlError::Unauthorized(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("wanted 401 saying {says:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn a_token_with_an_expiry_works_until_then_and_says_when() {
    let h = harness().await;
    let before = bothy_control::time::now();
    let made = h
        .control
        .mint_token(&h.admin, "acme", &expiring_in(3600))
        .await
        .expect("mint");
    assert!(bothy_api::is_token_id(&made.id), "{}", made.id);
    assert_eq!(made.organization, "acme");
    let expires = made.expires_at.clone().expect("an expiry");
    assert!(expires > before, "{expires} is in the future");
    assert_eq!(
        h.control
            .authenticate(&made.token)
            .await
            .expect("valid")
            .org(),
        "acme"
    );

    let forever = h
        .control
        .mint_token(&h.admin, "acme", &CreateTokenRequest::default())
        .await
        .expect("mint");
    assert_eq!(forever.expires_at, None);
    assert_ne!(forever.id, made.id);

    let listed: Vec<TokenInfo> = h
        .control
        .list_tokens(&member("acme"), None)
        .await
        .expect("list");
    let mine = listed.iter().find(|t| t.id == made.id).expect("listed");
    assert_eq!(mine.expires_at.as_deref(), Some(expires.as_str()));
    assert!(!mine.expired && !mine.is_admin);
    let text = serde_json::to_string(&listed).expect("json");
    for secret in [&made.token, &hash_token(&made.token), &forever.token] {
        assert!(
            !text.contains(secret.as_str()),
            "a secret is listed: {text}"
        );
    }
}

#[tokio::test]
async fn bad_expiries_are_refused_and_mint_nothing() {
    let h = harness().await;
    let before = h.ids(&h.admin, None).await;
    for req in [
        expiring_in(0),
        expiring_in(-1),
        expiring_in(bothy_api::MAX_TOKEN_LIFETIME_SECS + 1),
        CreateTokenRequest {
            expires_at: Some("next week".into()),
            ..Default::default()
        },
        CreateTokenRequest {
            expires_at: Some("2001-01-01T00:00:00Z".into()),
            ..Default::default()
        },
        CreateTokenRequest {
            expires_in: Some(60),
            expires_at: Some("2999-01-01T00:00:00Z".into()),
            ..Default::default()
        },
    ] {
        match h.control.mint_token(&h.admin, "acme", &req).await {
            Err(ControlError::Invalid { code, .. }) => assert_eq!(code, "invalid_expiry"),
            other => panic!("{req:?}: {other:?}"),
        }
    }
    assert_eq!(h.ids(&h.admin, None).await, before);
}

#[tokio::test]
async fn an_expired_token_is_refused_and_listed_as_expired() {
    let h = harness().await;
    let token = new_token();
    let row = h
        .control
        .store()
        .add_token(NewToken {
            hash: hash_token(&token),
            org: "acme".into(),
            is_admin: false,
            description: Some("ci".into()),
            created_at: "2000-01-01T00:00:00.000Z".into(),
            expires_at: Some(PAST.into()),
            limits: None,
        })
        .await
        .expect("add");
    assert_unauthorized(h.control.authenticate(&token).await, "expired");
    assert_unauthorized(h.control.authenticate(&token).await, "token create");
    let listed = h
        .control
        .list_tokens(&h.admin, Some("acme"))
        .await
        .expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, row.id);
    assert!(listed[0].expired);
}

#[tokio::test]
async fn listing_is_scoped_to_the_organisation_unless_admin() {
    let h = harness().await;
    let (_, acme1) = h.mint("acme").await;
    let (_, acme2) = h.mint("acme").await;
    let (_, other) = h.mint("other").await;
    let admin = h.admin_id().await;

    assert_eq!(
        h.ids(&member("acme"), None).await,
        [acme1.as_str(), acme2.as_str()]
    );
    assert_eq!(
        h.ids(&member("acme"), Some("acme")).await,
        [acme1.as_str(), acme2.as_str()]
    );
    assert!(matches!(
        h.control.list_tokens(&member("acme"), Some("other")).await,
        Err(ControlError::Forbidden(_))
    ));
    let all = h.ids(&h.admin, None).await;
    for id in [&admin, &acme1, &acme2, &other] {
        assert!(all.contains(id), "{id} missing from {all:?}");
    }
    assert_eq!(h.ids(&h.admin, Some("other")).await, [other.as_str()]);
    assert!(h.ids(&h.admin, Some("nobody")).await.is_empty());
    assert!(matches!(
        h.control.list_tokens(&h.admin, Some("Bad Name")).await,
        Err(ControlError::Invalid { .. })
    ));
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_its_next_call() {
    let h = harness().await;
    let (token, id) = h.mint("acme").await;
    h.control.authenticate(&token).await.expect("valid");
    h.control.revoke_token(&h.admin, &id).await.expect("revoke");
    assert_unauthorized(h.control.authenticate(&token).await, "revoked");
    assert!(!h.ids(&h.admin, None).await.contains(&id));
    assert!(matches!(
        h.control.revoke_token(&h.admin, &id).await,
        Err(ControlError::NotFound(_))
    ));

    // A member revokes its own organisation's token, its own included.
    let (own, own_id) = h.mint("acme").await;
    let caller = h.control.authenticate(&own).await.expect("valid");
    h.control
        .revoke_token(&caller, &own_id)
        .await
        .expect("revoke own");
    assert_unauthorized(h.control.authenticate(&own).await, "revoked");
}

#[tokio::test]
async fn other_organisations_tokens_are_not_found_by_members() {
    let h = harness().await;
    let (other_token, other_id) = h.mint("other").await;
    let admin_id = h.admin_id().await;
    let acme = member("acme");
    for id in [&other_id, &admin_id, &"tok_000000000000".to_string()] {
        match h.control.revoke_token(&acme, id).await {
            // The same answer as for an id nobody has: ids do not leak.
            Err(ControlError::NotFound(m)) => assert!(m.contains("token list"), "{m}"),
            other => panic!("revoking {id} from acme: {other:?}"),
        }
    }
    h.control
        .authenticate(&other_token)
        .await
        .expect("still valid");
    h.control
        .authenticate(&h.admin_token)
        .await
        .expect("still valid");

    // A member of the admin's own organisation may not revoke an admin token.
    assert!(matches!(
        h.control.revoke_token(&member("default"), &admin_id).await,
        Err(ControlError::Forbidden(_))
    ));
}

#[tokio::test]
async fn the_last_admin_token_that_has_not_expired_stays() {
    let h = harness().await;
    let admin_id = h.admin_id().await;
    let refused = |got: Result<(), ControlError>| match got {
        Err(ControlError::Refused { code, message }) => {
            assert_eq!(code, "last_admin_token");
            assert!(message.contains("last admin token"), "{message}");
        }
        other => panic!("wanted a refusal, got {other:?}"),
    };
    refused(h.control.revoke_token(&h.admin, &admin_id).await);
    // An expired admin token does not count as another one.
    h.control
        .store()
        .add_token(NewToken {
            hash: hash_token(&new_token()),
            org: "default".into(),
            is_admin: true,
            description: None,
            created_at: "2000-01-01T00:00:00.000Z".into(),
            expires_at: Some(PAST.into()),
            limits: None,
        })
        .await
        .expect("add");
    refused(h.control.revoke_token(&h.admin, &admin_id).await);
    h.control.authenticate(&h.admin_token).await.expect("kept");

    // With a second admin token, the first may go; then the second stays.
    let second = new_token();
    h.control
        .store()
        .add_admin_token(hash_token(&second), bothy_control::time::now())
        .await
        .expect("add");
    let second_caller = h.control.authenticate(&second).await.expect("valid");
    h.control
        .revoke_token(&second_caller, &admin_id)
        .await
        .expect("not the last");
    assert_unauthorized(h.control.authenticate(&h.admin_token).await, "revoked");
    let second_id = h.admin_id().await;
    refused(h.control.revoke_token(&second_caller, &second_id).await);
}

#[tokio::test]
async fn malformed_ids_are_bad_requests_that_never_echo_a_token() {
    let h = harness().await;
    let secret = new_token();
    for id in ["", "tok_", "tok_XYZ", "../x", secret.as_str()] {
        match h.control.revoke_token(&h.admin, id).await {
            Err(ControlError::Invalid { message, .. }) => {
                assert!(message.contains("tok_"), "{message}");
                assert!(!message.contains(&secret), "the token is echoed: {message}");
            }
            other => panic!("{id:?}: {other:?}"),
        }
    }
}

/// The state database exactly as the first release wrote it.
const SCHEMA_V1: &str = "CREATE TABLE schema_version (version INTEGER NOT NULL);
     CREATE TABLE orgs (name TEXT PRIMARY KEY, created TEXT NOT NULL);
     CREATE TABLE tokens (
         hash TEXT PRIMARY KEY,
         org TEXT NOT NULL REFERENCES orgs(name),
         is_admin INTEGER NOT NULL,
         description TEXT,
         created TEXT NOT NULL);
     CREATE TABLE sprites (
         id TEXT PRIMARY KEY,
         org TEXT NOT NULL REFERENCES orgs(name),
         name TEXT NOT NULL,
         ram_mb INTEGER NOT NULL,
         cpus INTEGER NOT NULL,
         storage_gb INTEGER NOT NULL,
         url_auth TEXT NOT NULL,
         url_private_access TEXT,
         labels TEXT NOT NULL,
         state TEXT NOT NULL,
         created_at TEXT NOT NULL,
         updated_at TEXT NOT NULL,
         last_running_at TEXT,
         UNIQUE (org, name));
     CREATE TABLE checkpoints (
         sprite_id TEXT NOT NULL REFERENCES sprites(id) ON DELETE CASCADE,
         seq INTEGER NOT NULL,
         volume_checkpoint INTEGER NOT NULL,
         comment TEXT,
         created_at TEXT NOT NULL,
         auto INTEGER NOT NULL,
         history TEXT NOT NULL,
         PRIMARY KEY (sprite_id, seq));
     CREATE TABLE lineage (
         sprite_id TEXT PRIMARY KEY REFERENCES sprites(id) ON DELETE CASCADE,
         next_seq INTEGER NOT NULL,
         history TEXT NOT NULL);
     INSERT INTO schema_version (version) VALUES (1);";

#[tokio::test]
async fn a_first_schema_database_is_migrated_in_place_on_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = bothy_control::datadir::prepare(&tmp.path().join("data")).expect("prepare");
    let admin = new_token();
    let acme = new_token();
    {
        let old = rusqlite::Connection::open(dir.join(bothy_control::STATE_DB)).expect("create");
        old.execute_batch(SCHEMA_V1).expect("old schema");
        let t = "2024-01-01T00:00:00.000Z";
        old.execute(
            "INSERT INTO orgs (name, created) VALUES ('default', ?1), ('acme', ?1)",
            [t],
        )
        .expect("orgs");
        old.execute(
            "INSERT INTO tokens (hash, org, is_admin, description, created)
             VALUES (?1, 'default', 1, 'admin token made on first start', ?3),
                    (?2, 'acme', 0, 'ci', ?3)",
            [hash_token(&admin), hash_token(&acme), t.to_string()],
        )
        .expect("tokens");
    }
    let start = || bothy_control::open_with(&dir, FakeBoxes::default(), None, false, None);

    let control = start()
        .await
        .expect("the daemon starts on the old database");
    let admin_caller = control.authenticate(&admin).await.expect("old admin token");
    assert!(admin_caller.is_admin());
    assert_eq!(
        control.authenticate(&acme).await.expect("old token").org(),
        "acme"
    );
    let listed = control
        .list_tokens(&admin_caller, None)
        .await
        .expect("list");
    assert_eq!(listed.len(), 2, "no token was added: {listed:?}");
    for t in &listed {
        assert!(bothy_api::is_token_id(&t.id), "{t:?}");
        assert_eq!(t.expires_at, None, "old tokens never expire: {t:?}");
        assert!(!t.expired);
    }
    assert_ne!(listed[0].id, listed[1].id);
    let acme_id = listed
        .iter()
        .find(|t| t.organization == "acme")
        .map(|t| t.id.clone())
        .expect("acme's token");
    assert!(
        !dir.join("admin-token").exists(),
        "a migrated database is not a first start"
    );
    // New tokens work alongside, with an expiry.
    control
        .mint_token(&admin_caller, "acme", &expiring_in(60))
        .await
        .expect("mint after migrating");
    control.shutdown(false).await;
    drop(control);

    // A second start migrates nothing more: the ids stay.
    let again = start().await.expect("starts again");
    let relisted = again.list_tokens(&admin_caller, None).await.expect("list");
    assert_eq!(relisted.len(), 3);
    assert_eq!(relisted[..2], listed[..]);
    again
        .revoke_token(&admin_caller, &acme_id)
        .await
        .expect("an old token is revoked by its new id");
    assert_unauthorized(again.authenticate(&acme).await, "revoked");
    again.shutdown(false).await;

    let version: i64 = rusqlite::Connection::open(dir.join(bothy_control::STATE_DB))
        .expect("open")
        .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, 7, "migrated to the current schema");
}

fn sprite(name: &str) -> bothy_api::CreateSpriteRequest {
    bothy_api::CreateSpriteRequest {
        name: name.into(),
        ..Default::default()
    }
}

fn limits(max: u32, read_only: bool) -> CreateTokenRequest {
    CreateTokenRequest {
        mcp: Some(bothy_api::TokenLimits {
            max_sprites: max,
            prefix: "mcp-".into(),
            read_only,
        }),
        ..Default::default()
    }
}

/// A token made for an agent sees only its prefix, creates at most its cap
/// (counting what exists, whoever made it), never outside its organisation,
/// and cannot mint, list or revoke tokens; a read-only one cannot create.
#[tokio::test]
async fn an_agent_token_keeps_to_its_prefix_cap_and_organisation() {
    let h = harness().await;
    let acme = member("acme");
    h.mint("acme").await;
    h.mint("other").await;
    h.control
        .create(&acme, sprite("prod-db"))
        .await
        .expect("unlimited create");
    h.control
        .create(&acme, sprite("mcp-old"))
        .await
        .expect("unlimited create");
    let made = h
        .control
        .mint_token(&h.admin, "acme", &limits(2, false))
        .await
        .expect("mint");
    assert_eq!(made.mcp.as_ref().map(|l| l.max_sprites), Some(2));
    let agent = h
        .control
        .authenticate(&made.token)
        .await
        .expect("authenticate");

    match h.control.create(&agent, sprite("web")).await {
        Err(ControlError::Forbidden(m)) => assert!(m.contains("mcp-"), "{m}"),
        other => panic!("a name without the prefix: {other:?}"),
    }
    h.control
        .create(&agent, sprite("mcp-a"))
        .await
        .expect("within the cap");
    match h.control.create(&agent, sprite("mcp-b")).await {
        Err(ControlError::QuotaExceeded(m)) => assert!(m.contains("at most 2"), "{m}"),
        other => panic!("past the cap: {other:?}"),
    }
    assert!(matches!(
        h.control.sprite(&agent, "prod-db").await,
        Err(ControlError::NotFound(_))
    ));
    let listed: Vec<String> = h
        .control
        .list(
            &agent,
            bothy_control::ListQuery {
                prefix: String::new(),
                limit: 50,
                after: None,
            },
        )
        .await
        .expect("list")
        .sprites
        .into_iter()
        .map(|v| v.row.name)
        .collect();
    assert_eq!(listed, ["mcp-a", "mcp-old"]);
    let other_prefix = h
        .control
        .list(
            &agent,
            bothy_control::ListQuery {
                prefix: "prod".into(),
                limit: 50,
                after: None,
            },
        )
        .await
        .expect("list");
    assert!(other_prefix.sprites.is_empty());
    let counts = h.control.counts(&agent).await.expect("counts");
    assert_eq!(
        counts.running + counts.warm + counts.cold,
        2,
        "counts only what it sees"
    );
    assert!(matches!(
        h.control.sprite(&agent, "mcp-x").await,
        Err(ControlError::NotFound(_))
    ));
    // Another organisation's box of the right prefix stays invisible.
    h.control
        .create(&member("other"), sprite("mcp-theirs"))
        .await
        .expect("create");
    assert!(h.control.sprite(&agent, "mcp-theirs").await.is_err());
    for refused in [
        h.control
            .mint_token(&agent, "acme", &CreateTokenRequest::default())
            .await
            .err(),
        h.control.list_tokens(&agent, None).await.err(),
    ] {
        assert!(
            matches!(refused, Some(ControlError::Forbidden(_))),
            "{refused:?}"
        );
    }
    let reader = h
        .control
        .mint_token(&h.admin, "acme", &limits(5, true))
        .await
        .expect("mint");
    let reader = h
        .control
        .authenticate(&reader.token)
        .await
        .expect("authenticate");
    assert!(matches!(
        h.control.create(&reader, sprite("mcp-r")).await,
        Err(ControlError::Forbidden(_))
    ));
    // Limits survive the store: the token is the same after a restart.
    let again = h.control.authenticate(&made.token).await.expect("again");
    assert_eq!(again.limits().map(|l| l.prefix.as_str()), Some("mcp-"));
}

#[tokio::test]
async fn agent_token_limits_are_validated() {
    let h = harness().await;
    for (prefix, max) in [
        ("", 1),
        ("MCP-", 1),
        ("1x", 1),
        ("a b", 1),
        ("a--", 1),
        ("abcdefghijklmnopqrstu", 1),
        ("mcp-", 10_001),
    ] {
        let req = CreateTokenRequest {
            mcp: Some(bothy_api::TokenLimits {
                max_sprites: max,
                prefix: prefix.into(),
                read_only: false,
            }),
            ..Default::default()
        };
        assert!(
            matches!(
                h.control.mint_token(&h.admin, "acme", &req).await,
                Err(ControlError::Invalid { .. })
            ),
            "{prefix:?} {max}"
        );
    }
}
