//! Seeds a fresh SQLite database for the load benchmark: organization, deployment `demo/chat`
//! and N data keys for it hashed at keyward's default argon2 parameters; writes their tokens,
//! one per line, to a file the load generators read. Run by `bench/load.sh`.
//!
//!   cargo run --release --example bench_seed -- --database PATH --keys 64 --tokens-out FILE

use anyhow::Context;

#[path = "../benches/support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut database, mut keys, mut out) = (None, 64usize, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database" => database = args.next(),
            "--keys" => keys = args.next().context("--keys N")?.parse()?,
            "--tokens-out" => out = args.next(),
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let database = database.context("--database PATH is required")?;
    let out = out.context("--tokens-out FILE is required")?;
    let config = support::config(std::path::Path::new(&database));
    let (authn, owner) = support::open_seeded(&config).await?;
    let tokens = support::real_keys(&config, owner, 0, keys, support::Hashing::DEFAULT).await?;
    authn.store().close().await;
    std::fs::write(&out, tokens.join("\n") + "\n").with_context(|| format!("write {out}"))?;
    Ok(())
}
