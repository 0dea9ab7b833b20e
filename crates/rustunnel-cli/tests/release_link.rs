//! The release link settings shared by the binaries' build scripts (build-support/release_link.rs)
//! and the function order files they pass to the linker.

#![allow(dead_code)]

include!("../../../build-support/release_link.rs");

#[test]
fn versions_are_compared_by_major_and_minor() {
    let rustc = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\nrelease: 1.95.0\nLLVM version: 22.1.2\n";
    assert_eq!(version_at_least(rustc, "release: ", (1, 90)), Some(true));
    assert_eq!(version_at_least("release: 1.89.0-nightly", "release: ", (1, 90)), Some(false));
    assert_eq!(version_at_least("release: 2.0.0", "release: ", (1, 90)), Some(true));
    assert_eq!(version_at_least("glibc 2.36", "glibc ", (2, 36)), Some(true));
    assert_eq!(version_at_least("glibc 2.35", "glibc ", (2, 36)), Some(false));
    assert_eq!(version_at_least("glibc 2.41.9000", "glibc ", (2, 36)), Some(true));
}

#[test]
fn unknown_versions_turn_the_settings_off() {
    assert_eq!(version_at_least("", "release: ", (1, 90)), None);
    assert_eq!(version_at_least("musl libc", "glibc ", (2, 36)), None);
    assert_eq!(version_at_least("release: one.two", "release: ", (1, 90)), None);
    assert_eq!(version_at_least("glibc 2", "glibc ", (2, 36)), None);
    assert_eq!(command_output("/nonexistent/program", &["-vV"]), "");
    assert!(!rustc_links_with_its_lld("/nonexistent/rustc"));
}

#[test]
fn order_files_list_one_symbol_per_line() {
    for crate_dir in ["rustunnel-server", "rustunnel-cli"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(crate_dir).join("link.order");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() > 500, "{}: only {} symbols", path.display(), lines.len());
        let mut seen = std::collections::HashSet::new();
        for line in &lines {
            assert!(!line.is_empty() && !line.contains(char::is_whitespace), "{}: bad line {line:?}", path.display());
            assert!(seen.insert(*line), "{}: {line} twice", path.display());
        }
        // The tunnel code itself is in the order, not only the libraries'.
        assert!(lines.iter().any(|l| l.contains("rustunnel")), "{}: no rustunnel symbol", path.display());
    }
}
