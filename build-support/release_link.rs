// Link settings for the release binaries, shared by the build scripts of `rustunnel-server` and
// `rustunnel` (included with `include!`).
//
// An idle process keeps mapped the pages of its binary that it has touched, and the kernel maps
// whole read-ahead windows or large folios around each one. Two settings keep that small:
//
// * Profile-guided function order: the functions that run at start-up and while idle, then those
//   on the data path, are linked first, in the order of the crate's `link.order` file (made by
//   `bench/link-order.sh`). The rest of the text stays on disk.
// * Packed relative relocations (`-z pack-relative-relocs`, DT_RELR): a few kilobytes of table
//   instead of hundreds, which the loader would otherwise read in full at start-up.
//
// Only in the release profile, only where the linker is known to be LLD (rustc >= 1.90 on
// x86_64-unknown-linux-gnu with the toolchain's own rust-lld, unless the build chooses its own
// linker), and DT_RELR only where the C library is glibc >= 2.36. `RUSTUNNEL_RELEASE_LINK=0`
// turns both off. Symbols of the order file that a build does not have are skipped silently.

fn release_link_args() {
    println!("cargo:rerun-if-changed=link.order");
    println!("cargo:rerun-if-env-changed=RUSTUNNEL_RELEASE_LINK");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    if env("RUSTUNNEL_RELEASE_LINK") == "0" || env("PROFILE") != "release" {
        return;
    }
    if env("TARGET") != "x86_64-unknown-linux-gnu" || env("HOST") != env("TARGET") {
        return;
    }
    let custom_linker = !env("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty()
        || env("CARGO_ENCODED_RUSTFLAGS")
            .split('\x1f')
            .any(|f| f.contains("linker") || f.contains("link-self-contained") || f.contains("fuse-ld"));
    if custom_linker || !rustc_links_with_its_lld(&env("RUSTC")) {
        return;
    }
    let order = std::path::Path::new(&env("CARGO_MANIFEST_DIR")).join("link.order");
    // `-Wl,` splits its argument at commas.
    if order.is_file() && !order.to_string_lossy().contains(',') {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
    if version_at_least(&command_output("getconf", &["GNU_LIBC_VERSION"]), "glibc ", (2, 36)) == Some(true) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// rustc links x86_64-unknown-linux-gnu with its own LLD from 1.90 on, where the toolchain ships
/// it (rustup's does; a distribution's rustc built without it links with the system's `ld`).
fn rustc_links_with_its_lld(rustc: &str) -> bool {
    if version_at_least(&command_output(rustc, &["-vV"]), "release: ", (1, 90)) != Some(true) {
        return false;
    }
    let sysroot = command_output(rustc, &["--print", "sysroot"]);
    let lld = std::path::Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld");
    !sysroot.trim().is_empty() && lld.is_file()
}

fn command_output(program: &str, args: &[&str]) -> String {
    let program = if program.is_empty() { "rustc" } else { program };
    std::process::Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Whether the `major.minor` version after `prefix` on some line of `text` is at least `min`.
fn version_at_least(text: &str, prefix: &str, min: (u32, u32)) -> Option<bool> {
    let version = text.lines().find_map(|l| l.trim().strip_prefix(prefix))?;
    let mut parts = version.split(['.', '-', ' ']).map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    Some((major, minor) >= min)
}
