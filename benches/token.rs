//! Token parsing: the first thing every Check does with a credential, before any lookup.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use keyward::model::Plane;
use keyward::token::{self, Token};

fn bench(c: &mut Criterion) {
    let valid = token::generate(Plane::Data, &token::generate_key_id()).token;
    let mut typo = valid.clone().into_bytes();
    let last = typo.len() - 1;
    typo[last] = if typo[last] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).expect("ASCII");

    let mut group = c.benchmark_group("token");
    group.bench_function("parse_valid", |b| {
        b.iter(|| Token::parse(black_box(&valid)).is_ok())
    });
    group.bench_function("parse_bad_checksum", |b| {
        b.iter(|| Token::parse(black_box(&typo)).is_err())
    });
    group.bench_function("parse_wrong_prefix", |b| {
        b.iter(|| Token::parse(black_box("sk-proj-0123456789abcdef")).is_err())
    });
    let parsed = Token::parse(&valid).expect("valid token");
    group.bench_function("cache_key_sha256", |b| {
        b.iter(|| black_box(&parsed).cache_key())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
