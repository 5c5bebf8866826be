//! Compiles the admin API's and the module feed's protobuf definitions. `protoc` comes from the vendored
//! `protoc-bin-vendored` crate, so a fresh machine needs nothing installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY of intent: build scripts are single-threaded; PROTOC only steers prost-build.
    unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(
            &[
                "proto/keyward/admin/v1/admin.proto",
                "proto/keyward/module/v1/feed.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
