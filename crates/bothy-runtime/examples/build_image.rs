//! Builds (or with `--force`, rebuilds) the base image into the default
//! image dir, printing progress: the same as `bothy image build`.

use bothy_runtime::image::{self, BuildProgress};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let force = std::env::args().any(|a| a == "--force");
    let dir = std::path::Path::new(image::DEFAULT_IMAGE_DIR);
    let started = std::time::Instant::now();
    let path = image::build_with(dir, force, &|p| match p {
        BuildProgress::Step { n, of, what } => println!("[{n}/{of}] {what}"),
        BuildProgress::Line(line) => println!("    {line}"),
    })
    .await?;
    println!("{} in {:.1?}", path.display(), started.elapsed());
    Ok(())
}
