//! The TLS 1.3 record layer after the handshake (`rustunnel_transport::record`): record headers
//! (`record_len`), `Records::open` and the reassembly of post-handshake messages (key updates
//! split over records, alerts, padding, empty records), as the control port and the data
//! connections read them from a peer. Both ends start from known traffic secrets, so the
//! input's inner plaintexts are sealed and get past the AEAD, key updates included; raw bytes
//! can be mixed in.
//!
//! The first byte picks the cipher suite. Then the input is a list of steps, each a byte then a
//! part: 0 raw bytes on the wire, 1
//! application data (the next byte is the padding), 2 handshake bytes, 3 a whole inner
//! plaintext (content, type and padding as given). After each step the reader takes every
//! complete record off the wire, as `lean_tls` does. Asserted: no panic; data comes out as it
//! was sealed; after an error nothing opens any more and the alert to send fits its room; the
//! memory held stays within the bounds (a handshake message at most 64 KiB).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ring::aead;
use rustunnel_fuzz::{measure, Input};
use rustunnel_transport::record::{
    record_len, sealed_len, Opened, RecordError, Records, Secrets, ALERT_ROOM, HEADER, KEY_UPDATE_ROOM, MAX_CIPHER,
    MAX_PLAIN, TAG,
};

/// The two directions' first traffic secrets (48 bytes: enough for SHA-384 suites).
const OURS: [u8; 48] = [9; 48];
const THEIRS: [u8; 48] = [3; 48];
const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;

/// The reader's side: the bytes on the wire not taken yet, and what it expects them to open to.
struct Reader {
    records: Records<Secrets>,
    wire: Vec<u8>,
    /// Sealed records in order with the application data each must open to; cleared for good
    /// once raw bytes were mixed in (record boundaries are then the input's).
    expect: std::collections::VecDeque<(Vec<u8>, Option<Vec<u8>>)>,
    raw: bool,
    failed: Option<RecordError>,
}

impl Reader {
    /// Opens every complete record on the wire; the sealer follows each key update the reader
    /// took (the sealer's own key update moves it to the secret the reader moved to).
    fn take(&mut self, sealer: &mut Records<Secrets>) {
        while self.failed.is_none() {
            let n = match record_len(&self.wire) {
                Ok(Some(n)) if n <= self.wire.len() => n,
                Ok(_) => return,
                Err(e) => {
                    self.fail(e);
                    return;
                }
            };
            assert!(n <= HEADER + MAX_CIPHER);
            let mut rec: Vec<u8> = self.wire.drain(..n).collect();
            let sealed = rec.clone();
            let updates = self.records.key_updates().0;
            match self.records.open(&mut rec) {
                Ok(Opened::Data(r)) => {
                    assert!(r.start == HEADER && r.end < n - TAG && r.len() <= MAX_PLAIN, "{r:?} in {n}");
                    if !self.raw {
                        let (bytes, want) = self.expect.pop_front().expect("a record sealed here");
                        assert_eq!(bytes, sealed);
                        assert_eq!(want.as_deref(), Some(&rec[r]), "data opened differs from data sealed");
                    }
                }
                Ok(Opened::Control | Opened::Closed) => {
                    if !self.raw {
                        let (bytes, want) = self.expect.pop_front().expect("a record sealed here");
                        assert_eq!(bytes, sealed);
                        assert!(want.is_none(), "sealed data opened as control");
                    }
                }
                Err(e) => self.fail(e),
            }
            for _ in updates..self.records.key_updates().0 {
                let mut scratch = [0u8; KEY_UPDATE_ROOM];
                sealer.key_update(&mut scratch, false).expect("the sealer updates its key");
            }
        }
    }

    fn fail(&mut self, e: RecordError) {
        // The one alert fits its room; after it nothing opens or seals.
        let mut out = [0u8; ALERT_ROOM];
        let n = self.records.seal_fatal_alert(&mut out, &e).expect("the alert seals");
        assert_eq!(n, if e.alert().is_some() { ALERT_ROOM } else { 0 });
        let mut probe = vec![23, 3, 3, 0, 17];
        probe.resize(22, 0);
        assert_eq!(self.records.open(&mut probe), Err(RecordError::Failed));
        assert_eq!(self.records.seal_data(&mut [0u8; 64], b"x"), Err(RecordError::Failed));
        self.failed = Some(e);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let (alg, len) = match input.byte() % 3 {
        0 => (&aead::AES_128_GCM, 32),
        1 => (&aead::AES_256_GCM, 48),
        _ => (&aead::CHACHA20_POLY1305, 32),
    };
    let mut sealer = Records::from_secrets(alg, &THEIRS[..len], &OURS[..len], 0).expect("known secrets");
    let mut reader = Reader {
        records: Records::from_secrets(alg, &OURS[..len], &THEIRS[..len], 0).expect("known secrets"),
        wire: Vec::new(),
        expect: Default::default(),
        raw: false,
        failed: None,
    };
    let bound = 4 * data.len() + 256 * 1024;
    let ((), peak) = measure(|| {
        while !input.is_empty() && reader.failed.is_none() {
            let step = input.byte() % 4;
            let (inner, want) = match step {
                0 => {
                    reader.wire.extend_from_slice(input.part());
                    reader.raw = true;
                    reader.expect.clear();
                    reader.take(&mut sealer);
                    continue;
                }
                1 => {
                    let content = input.part();
                    let pad = usize::from(input.byte());
                    let mut inner = content.to_vec();
                    inner.push(APPLICATION_DATA);
                    inner.resize(inner.len() + pad, 0);
                    (inner, Some(content.to_vec()))
                }
                2 => ([input.part(), &[HANDSHAKE]].concat(), None),
                _ => {
                    let inner = input.part().to_vec();
                    // Application data with content is checked; anything else only must not panic.
                    let end = inner.iter().rposition(|&b| b != 0);
                    let want = match end {
                        Some(e) if inner[e] == APPLICATION_DATA && inner.len() <= MAX_PLAIN + 1 => {
                            Some(inner[..e].to_vec())
                        }
                        _ => None,
                    };
                    (inner, want)
                }
            };
            let mut out = vec![0u8; sealed_len(inner.len())];
            let Ok(n) = sealer.seal_inner(&mut out, &inner) else { continue };
            out.truncate(n);
            if !reader.raw {
                reader.expect.push_back((out.clone(), want));
            }
            reader.wire.extend_from_slice(&out);
            reader.take(&mut sealer);
        }
    });
    assert!(peak <= bound, "the record layer held {peak} bytes for {} bytes of input", data.len());
});
