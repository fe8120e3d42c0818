//! Links librados and librbd. The bindings themselves are committed (src/bindings.rs, made
//! by regen.sh; docs/decisions/0011-ceph-bindings.md), so building needs no libclang.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-link-lib=dylib=rados");
    println!("cargo:rustc-link-lib=dylib=rbd");
}
