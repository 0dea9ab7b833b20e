include!("../../build-support/release_link.rs");

fn main() {
    release_link_args();
}
