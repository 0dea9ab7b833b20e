// A link to build-support/release_link.rs, so the packaged crate carries it.
include!("release_link.rs");

fn main() {
    release_link_args();
}
