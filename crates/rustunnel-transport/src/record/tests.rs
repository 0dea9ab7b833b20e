use ring::aead;
use rustls::ConnectionTrafficSecrets;

use super::keys::Keys;
use super::wire::*;
use super::*;

#[test]
fn headers_are_checked_before_anything_is_buffered() {
    assert_eq!(record_len(&[23, 3, 3, 0]), Ok(None));
    assert_eq!(record_len(&[23, 3, 3, 0, 17]), Ok(Some(22)));
    assert_eq!(record_len(&[22, 3, 3, 0, 17]), Err(RecordError::UnexpectedType(22)));
    assert_eq!(record_len(&[21, 3, 3, 0, 17]), Err(RecordError::UnexpectedType(21)));
    assert_eq!(record_len(&[23, 3, 1, 0, 17]), Err(RecordError::BadVersion(0x0301)));
    assert_eq!(record_len(&[23, 3, 3, 0x41, 1]), Err(RecordError::Overflow(0x4101)));
    assert_eq!(record_len(&[23, 3, 3, 0, 16]), Err(RecordError::Short));
    let max = MAX_CIPHER.to_be_bytes();
    assert_eq!(record_len(&[23, 3, 3, max[6], max[7]]), Ok(Some(HEADER + MAX_CIPHER)));
}

#[test]
fn nonces_xor_the_sequence_into_the_iv() {
    let secrets = ConnectionTrafficSecrets::Aes128Gcm { key: [7u8; 32].into(), iv: [0xf0; aead::NONCE_LEN].into() };
    // A 32-byte key is refused for AES-128: keys are checked, not truncated.
    assert!(TrafficKey::from_rustls(secrets).is_err());
    let mut k = Keys::new((0x0102, TrafficKey::new(&aead::AES_128_GCM, &[7u8; 16], &[0xf0; 12]).unwrap()));
    let n = k.next_nonce().unwrap();
    let mut want = [0xf0; aead::NONCE_LEN];
    want[10] ^= 0x01;
    want[11] ^= 0x02;
    assert_eq!(n.as_ref(), &want);
    assert_eq!(k.seq, 0x0103);
    k.seq = u64::MAX;
    assert!(k.next_nonce().is_err(), "a sequence number never wraps");
}

/// Two ends of a connection under made-up secrets.
fn ends() -> (Records<Secrets>, Records<Secrets>) {
    let (a, b) = ([9u8; 32], [3u8; 32]);
    let alg = &aead::AES_128_GCM;
    (Records::from_secrets(alg, &a, &b, 0).unwrap(), Records::from_secrets(alg, &b, &a, 0).unwrap())
}

/// Seals `inner` (content, type, padding) and opens it.
fn send(tx: &mut Records<Secrets>, rx: &mut Records<Secrets>, inner: &[u8]) -> Result<Opened, RecordError> {
    let mut rec = vec![0u8; HEADER + inner.len() + TAG];
    let n = tx.seal_inner(&mut rec, inner).unwrap();
    rx.open(&mut rec[..n])
}

fn data(n: usize) -> Vec<u8> {
    let mut v = vec![b'x'; n];
    v.push(APPLICATION_DATA);
    v
}

#[test]
fn the_inner_plaintext_is_at_most_2_14_plus_1_bytes_padding_included() {
    let (mut tx, mut rx) = ends();
    // Full content and its type: the largest inner plaintext.
    assert_eq!(send(&mut tx, &mut rx, &data(MAX_PLAIN)), Ok(Opened::Data(HEADER..HEADER + MAX_PLAIN)));
    // Small content, padded past the limit: refused although the ciphertext fits a record.
    let mut padded = data(10);
    padded.resize(MAX_PLAIN + 2, 0);
    let e = send(&mut tx, &mut rx, &padded).unwrap_err();
    assert_eq!(e, RecordError::Overflow(MAX_PLAIN + 2));
    assert_eq!(e.alert(), Some(RECORD_OVERFLOW));
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &data(MAX_PLAIN + 1)), Err(RecordError::Overflow(MAX_PLAIN + 2)));
    // And nothing opens after a failure.
    assert_eq!(send(&mut tx, &mut rx, &data(1)), Err(RecordError::Failed));
}

#[test]
fn sealing_more_than_a_record_is_an_error_not_a_panic() {
    let (mut tx, _) = ends();
    let mut out = vec![0u8; sealed_len(MAX_PLAIN + 1) + KEY_UPDATE_ROOM];
    assert_eq!(tx.seal_data(&mut out, &vec![1; MAX_PLAIN + 1]), Err(RecordError::Overflow(MAX_PLAIN + 1)));
    assert_eq!(tx.seal_in_place(&mut out, MAX_PLAIN + 1), Err(RecordError::Overflow(MAX_PLAIN + 1)));
    assert_eq!(tx.seal_data(&mut out[..100], &[1; 100]), Err(RecordError::NoRoom));
    assert_eq!(tx.seal_in_place(&mut out[..100], 100), Err(RecordError::NoRoom));
    // A record shorter than its header says, or longer, is refused before decrypting.
    let (mut tx, mut rx) = ends();
    let n = tx.seal_data(&mut out, b"hello").unwrap();
    assert_eq!(rx.open(&mut out[..n - 1]), Err(RecordError::LengthMismatch));
    let (_, mut rx) = ends();
    assert_eq!(rx.open(&mut out[..3]), Err(RecordError::LengthMismatch));
}

#[test]
fn no_record_of_another_type_inside_a_fragmented_handshake_message() {
    let key_update_request = [KEY_UPDATE, 0, 0, 1, 1];
    for (other, want) in [
        (data(3), RecordError::Interleaved(APPLICATION_DATA)),
        (vec![APPLICATION_DATA], RecordError::Interleaved(APPLICATION_DATA)),
        (vec![WARNING, CLOSE_NOTIFY, ALERT], RecordError::Interleaved(ALERT)),
        (vec![WARNING, USER_CANCELED, ALERT], RecordError::Interleaved(ALERT)),
    ] {
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, &[&key_update_request[..2], &[HANDSHAKE]].concat()), Ok(Opened::Control));
        assert!(rx.in_handshake_message());
        let e = send(&mut tx, &mut rx, &other).unwrap_err();
        assert_eq!(e, want);
        assert_eq!(e.alert(), Some(UNEXPECTED_MESSAGE));
    }
    // The rest of the message in the next record completes it.
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &[&key_update_request[..2], &[HANDSHAKE]].concat()), Ok(Opened::Control));
    assert_eq!(send(&mut tx, &mut rx, &[&key_update_request[2..], &[HANDSHAKE]].concat()), Ok(Opened::Control));
    assert!(!rx.in_handshake_message() && rx.key_update_due(0) && rx.key_updates() == (1, 0));
}

#[test]
fn records_without_application_data_are_bounded_as_rustls_bounds_them() {
    // Empty records: 32 in a row, the 33rd ends the connection; content resets the count.
    let (mut tx, mut rx) = ends();
    for round in 0..3 {
        for _ in 0..MAX_EMPTY_IN_ROW {
            assert_eq!(send(&mut tx, &mut rx, &[APPLICATION_DATA, 0, 0]), Ok(Opened::Data(HEADER..HEADER)));
        }
        if round < 2 {
            assert!(matches!(send(&mut tx, &mut rx, &data(1)), Ok(Opened::Data(_))));
        }
    }
    let e = send(&mut tx, &mut rx, &[APPLICATION_DATA]).unwrap_err();
    assert_eq!(e.alert(), Some(UNEXPECTED_MESSAGE));
    assert_eq!(e, RecordError::TooManyEmpty);

    // Key update requests: 32 in a row, answered by one key update of ours; the 33rd ends
    // it. Application data resets the count, an empty record does not.
    let (mut tx, mut rx) = ends();
    let mut out = vec![0u8; 4 * KEY_UPDATE_ROOM];
    for _ in 0..MAX_KEY_UPDATES_IN_ROW - 1 {
        let n = tx.key_update(&mut out, true).unwrap();
        assert_eq!(rx.open(&mut out[..n]), Ok(Opened::Control));
    }
    assert!(matches!(send(&mut tx, &mut rx, &[APPLICATION_DATA]), Ok(Opened::Data(_))));
    let n = tx.key_update(&mut out, true).unwrap();
    assert_eq!(rx.open(&mut out[..n]), Ok(Opened::Control));
    // Our answer: one key update before our next record, however many were asked for.
    let n = rx.seal_data(&mut out, b"after").unwrap();
    assert_eq!(n, KEY_UPDATE_ROOM + sealed_len(5));
    assert_eq!(rx.key_updates(), (32, 1));
    assert!(!rx.key_update_due(1));
    let n = tx.key_update(&mut out, true).unwrap();
    let e = rx.open(&mut out[..n]).unwrap_err();
    assert_eq!(e.alert(), Some(UNEXPECTED_MESSAGE));
    assert_eq!(e, RecordError::TooManyKeyUpdates);
    // ... and application data resets it.
    let (mut tx, mut rx) = ends();
    for _ in 0..3 * MAX_KEY_UPDATES_IN_ROW {
        let n = tx.key_update(&mut out, false).unwrap();
        assert_eq!(rx.open(&mut out[..n]), Ok(Opened::Control));
        assert!(matches!(send(&mut tx, &mut rx, &data(1)), Ok(Opened::Data(_))));
    }

    // Warning alerts: user_canceled is ignored 4 times in the life of a connection.
    let (mut tx, mut rx) = ends();
    for _ in 0..MAX_WARNING_ALERTS {
        assert_eq!(send(&mut tx, &mut rx, &[WARNING, USER_CANCELED, ALERT]), Ok(Opened::Control));
        assert!(matches!(send(&mut tx, &mut rx, &data(1)), Ok(Opened::Data(_))));
    }
    let e = send(&mut tx, &mut rx, &[WARNING, USER_CANCELED, ALERT]).unwrap_err();
    assert_eq!(e.alert(), Some(UNEXPECTED_MESSAGE));
    assert_eq!(e, RecordError::TooManyWarnings);
}

#[test]
fn alerts_are_judged_as_rustls_judges_them() {
    let cases: [(&[u8], Result<Opened, RecordError>); 7] = [
        (&[WARNING, CLOSE_NOTIFY, ALERT], Ok(Opened::Closed)),
        (&[FATAL, CLOSE_NOTIFY, ALERT], Ok(Opened::Closed)),
        (&[WARNING, USER_CANCELED, ALERT], Ok(Opened::Control)),
        (&[FATAL, USER_CANCELED, ALERT], Err(RecordError::Alert(USER_CANCELED))),
        (&[WARNING, 42, ALERT], Err(RecordError::WarningAlert(42))),
        (&[3, 42, ALERT], Err(RecordError::BadAlertLevel(3))),
        (&[WARNING, CLOSE_NOTIFY, 7, ALERT], Err(RecordError::BadAlert)),
    ];
    for (inner, want) in cases {
        let (mut tx, mut rx) = ends();
        assert_eq!(send(&mut tx, &mut rx, inner), want, "{inner:?}");
    }
    assert_eq!(RecordError::Alert(40).alert(), None, "no alert answers the peer's fatal one");
    assert_eq!(RecordError::WarningAlert(42).alert(), Some(DECODE_ERROR));
    assert_eq!(RecordError::BadAlertLevel(3).alert(), Some(ILLEGAL_PARAMETER));
    assert_eq!(RecordError::BadRecordMac.alert(), Some(BAD_RECORD_MAC));
}

#[test]
fn one_fatal_alert_is_sealed_after_a_failure_and_nothing_else() {
    let (mut tx, mut rx) = ends();
    let mut rec = vec![0u8; 64];
    let n = tx.seal_data(&mut rec, b"tampered").unwrap();
    rec[8] ^= 1;
    let e = rx.open(&mut rec[..n]).unwrap_err();
    assert_eq!(e, RecordError::BadRecordMac);
    let mut out = [0u8; ALERT_ROOM];
    assert_eq!(rx.seal_fatal_alert(&mut out, &e), Ok(ALERT_ROOM));
    // Our alert opens at the other end as what it is.
    assert_eq!(tx.open(&mut out), Err(RecordError::Alert(BAD_RECORD_MAC)));
    assert_eq!(rx.seal_fatal_alert(&mut out, &e), Ok(0), "one alert");
    assert_eq!(rx.seal_data(&mut rec, b"more"), Err(RecordError::Failed));
    assert_eq!(rx.seal_close_notify(&mut rec), Err(RecordError::Failed));
}

#[test]
fn a_key_update_must_end_its_record_and_be_well_formed() {
    let (mut tx, mut rx) = ends();
    let two = [KEY_UPDATE, 0, 0, 1, 0, KEY_UPDATE, 0, 0, 1, 0, HANDSHAKE];
    assert_eq!(send(&mut tx, &mut rx, &two), Err(RecordError::KeyUpdateNotLast));
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &[KEY_UPDATE, 0, 0, 1, 2, HANDSHAKE]), Err(RecordError::BadKeyUpdate));
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &[HANDSHAKE, 0]), Ok(Opened::Control), "empty: counted, nothing else");
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &[20, 0, 0, 0, HANDSHAKE]), Err(RecordError::UnexpectedHandshake(20)));
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &[4, 1, 0, 0, HANDSHAKE]), Err(RecordError::HandshakeTooLarge));
    // A message of the largest size is buffered until complete (and then refused, being a
    // ticket sent to a server).
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &[4, 0, 0xff, 0xff, HANDSHAKE]), Ok(Opened::Control));
    for _ in 0..3 {
        assert_eq!(send(&mut tx, &mut rx, &[&[7u8; MAX_PLAIN][..], &[HANDSHAKE]].concat()), Ok(Opened::Control));
    }
    let rest = 0xffff - 3 * MAX_PLAIN;
    let e = send(&mut tx, &mut rx, &[&vec![7u8; rest][..], &[HANDSHAKE]].concat());
    assert_eq!(e, Err(RecordError::UnexpectedHandshake(NEW_SESSION_TICKET)));
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &[0, 0, 0]), Err(RecordError::NoContentType));
    let (mut tx, mut rx) = ends();
    assert_eq!(send(&mut tx, &mut rx, &[1, 20]), Err(RecordError::UnexpectedType(20)));
}
