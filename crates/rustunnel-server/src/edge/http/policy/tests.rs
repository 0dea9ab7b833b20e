use super::*;

#[test]
fn only_the_exact_credentials_match() {
    let want: [u8; 32] = Sha256::digest(b"ana:correct horse").into();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert!(matches(format!("Basic {}", b64("ana:correct horse")).as_bytes(), &want));
    assert!(matches(format!("basic {}", b64("ana:correct horse")).as_bytes(), &want));
    assert!(matches(format!("BASIC {}", b64("ana:correct horse")).as_bytes(), &want));
    assert!(!matches(b"Basic", &want));
    for wrong in ["ana:correct hors", "Ana:correct horse", "ana:correct horse ", ""] {
        assert!(!matches(format!("Basic {}", b64(wrong)).as_bytes(), &want), "{wrong}");
    }
    assert!(!matches(format!("Bearer {}", b64("ana:correct horse")).as_bytes(), &want));
    assert!(!matches(b"Basic !!!not base64", &want));
    assert!(!matches(format!("Basic {}", "A".repeat(5000)).as_bytes(), &want));
}
