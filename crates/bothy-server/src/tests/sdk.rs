//! The published Python SDK against the router (boxes faked). Needs a Python
//! with `sprites-py` installed: `BOTHY_SDK_PYTHON`, else the venv that
//! `scripts/test.sh` makes at the repository root (`.venv-test`).

use super::*;

const SCRIPT: &str = r#"
import io, sys
from sprites import SpritesClient
from sprites.exceptions import NotFoundError
from sprites.types import ListOptions
url, token = sys.argv[1], sys.argv[2]
c = SpritesClient(token, base_url=url)
s = c.create_sprite("sdk-box", labels=["a"])
assert s.name == "sdk-box", s
for i in range(3):
    c.create_sprite(f"page-{i}")
got = c.get_sprite("sdk-box")
assert got.name == "sdk-box"
page = c.list_sprites(ListOptions(prefix="page-", max_results=2))
assert [x.name for x in page.sprites] == ["page-0", "page-1"] and page.has_more, page
assert [x.name for x in c.list_all_sprites(prefix="page-")] == ["page-0", "page-1", "page-2"]
c.update_sprite("sdk-box", labels=["b"])
r = s.run("echo", "hi", capture_output=True)
assert (r.returncode, r.stdout, r.stderr) == (3, b"hi\n", b"warn"), r
r = s.run("nosuchcmd", capture_output=True)
assert r.returncode == 127 and b"command not found" in r.stderr, r
out = s.command("cat", stdin=io.BytesIO(b"piped")).output()
assert out == b"piped", out
r = s.run("echo", "tty", capture_output=True, tty=True)
assert r.returncode == 3 and r.stdout.startswith(b"tty"), r
sessions = s.list_sessions()
assert sessions and sessions[0].id == "s1", sessions
try:
    c.get_sprite("missing")
    raise SystemExit("expected NotFoundError")
except NotFoundError:
    pass
try:
    c.create_sprite("sdk-box")
    raise SystemExit("expected a conflict")
except Exception as e:
    assert "409" in str(e) or "already" in str(e), e
s.destroy()
try:
    c.get_sprite("sdk-box")
    raise SystemExit("expected NotFoundError after destroy")
except NotFoundError:
    pass
print("sdk ok")
"#;

#[tokio::test]
async fn sprites_py_works_unchanged() {
    let python = std::env::var("BOTHY_SDK_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv-test/bin/python").to_string()
    });
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python with sprites-py at {python}: run scripts/test.sh once, or set BOTHY_SDK_PYTHON"
    );
    let h = harness().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = h.router.clone();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let out = tokio::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(format!("http://{addr}"))
        .arg(&h.admin)
        .output()
        .await
        .expect("run python");
    assert!(
        out.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
