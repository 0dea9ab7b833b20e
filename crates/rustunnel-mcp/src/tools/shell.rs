//! Words for the POSIX shell commands the tools hand to people.

/// `s` as one word for a POSIX shell: as it is when it has only characters no shell reads
/// specially, else single-quoted (`[` and `]` are glob characters: `[::1]:4040` is quoted).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'@' | b','));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_survive_bash() {
        for (raw, quoted) in [
            ("127.0.0.1:4040", "127.0.0.1:4040"),
            ("localhost:4040", "localhost:4040"),
            ("[::1]:4040", "'[::1]:4040'"),
            ("it's", r"'it'\''s'"),
            ("", "''"),
            ("a b", "'a b'"),
            ("a b;rm -rf", "'a b;rm -rf'"),
        ] {
            assert_eq!(shell_quote(raw), quoted);
            // With nullglob a glob that matches nothing would vanish: the word must not be one.
            let script = format!("shopt -s nullglob; printf %s {quoted}");
            let out = std::process::Command::new("bash").args(["-c", &script]).output().unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), raw, "{quoted}");
        }
    }
}
