//! Seeds a fresh SQLite database for the load benchmark: organization, deployment `demo/chat`
//! and N data keys for it hashed at keyward's default argon2 parameters; writes their tokens,
//! one per line, to a file the load generators read. Run by `bench/load.sh`.
//!
//! With `--wrong-out FILE --wrong N` it also writes N well-formed tokens with the real key ids
//! and fresh wrong secrets (a flood that passes parsing and misses every cache; bench/flood_envoy.sh).
//!
//!   cargo run --release --example bench_seed -- --database PATH --keys 64 --tokens-out FILE \
//!       [--wrong-out FILE --wrong 200000]

use anyhow::Context;

#[path = "../benches/support/mod.rs"]
mod support;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut database, mut keys, mut out) = (None, 64usize, None);
    let (mut wrong_out, mut wrong) = (None, 0usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database" => database = args.next(),
            "--keys" => keys = args.next().context("--keys N")?.parse()?,
            "--tokens-out" => out = args.next(),
            "--wrong-out" => wrong_out = args.next(),
            "--wrong" => wrong = args.next().context("--wrong N")?.parse()?,
            other => anyhow::bail!("unknown argument {other:?}"),
        }
    }
    let database = database.context("--database PATH is required")?;
    let out = out.context("--tokens-out FILE is required")?;
    let config = support::config(std::path::Path::new(&database));
    let (services, owner) = support::open_seeded(&config).await?;
    let tokens = support::real_keys(&config, owner, 0, keys, support::Hashing::DEFAULT).await?;
    services.store.close().await;
    std::fs::write(&out, tokens.join("\n") + "\n").with_context(|| format!("write {out}"))?;
    if let Some(wrong_out) = wrong_out {
        let key_ids: Vec<String> = tokens
            .iter()
            .map(|t| keyward::token::Token::parse(t).map(|t| t.key_id.to_owned()))
            .collect::<Result<_, _>>()?;
        let lines: String = (0..wrong)
            .map(|i| {
                let id = &key_ids[i % key_ids.len()];
                keyward::token::generate(keyward::model::Plane::Data, id).token + "\n"
            })
            .collect();
        std::fs::write(&wrong_out, lines).with_context(|| format!("write {wrong_out}"))?;
    }
    Ok(())
}
