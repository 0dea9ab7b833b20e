//! Agent-channel join links and relay base URLs (`rustunnel_agent::link`): a guest pastes a
//! link it was sent, and the room id arrives in the relay's request path. A link or base URL
//! that parses prints back to one that parses the same, and the secret never appears in what
//! is dialled.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustunnel_agent::link::{JoinLink, RelayBase, RoomId, MAX_LINK_LEN};
use rustunnel_fuzz::measure;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let (link, peak) = measure(|| JoinLink::parse(&s));
    assert!(peak <= 4 * MAX_LINK_LEN, "JoinLink::parse held {peak} bytes");
    if let Ok(l) = link {
        let printed = l.to_string();
        assert_eq!(JoinLink::parse(&printed).expect("a printed link parses"), l);
        assert!(!l.request_url().contains('#'));
        assert!(!l.request_path().contains('#'));
        let _ = (l.dial_target(), l.host_header());
    }
    if let Ok(b) = RelayBase::parse(&s) {
        assert_eq!(RelayBase::parse(&b.to_string()).expect("a printed base parses"), b);
    }
    if let Ok(r) = RoomId::parse(&s) {
        assert_eq!(r.as_str(), s);
    }
});
