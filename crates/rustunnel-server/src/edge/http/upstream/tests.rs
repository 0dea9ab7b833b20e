use std::net::IpAddr;
use std::time::Duration;

use super::*;

/// Both ends of a multiplexed connection in memory, their drivers running: the opener, whose
/// streams the tests keep in a pool, and the other handles, held so that neither end closes.
fn mux_pair() -> (MuxHandle, impl Sized) {
    let (a, b) = tokio::io::duplex(1024);
    let (opener, acc, driver) = mux(a, Role::Opener, MuxConfig::default());
    let (h, peer, peer_driver) = mux(b, Role::Acceptor, MuxConfig::default());
    tokio::spawn(driver);
    tokio::spawn(peer_driver);
    (opener, (acc, h, peer))
}

#[tokio::test]
async fn idle_upstreams_expire_oldest_first() {
    let (opener, _ends) = mux_pair();
    let pool = IdlePool::default();
    let minute = Duration::from_secs(60);
    pool.push(Either::Right(opener.open(b"1").unwrap()), minute, None);
    tokio::time::sleep(Duration::from_millis(30)).await;
    pool.push(Either::Right(opener.open(b"2").unwrap()), minute, None);
    assert_eq!(pool.len(), 2);
    pool.sweep(minute);
    assert_eq!(pool.len(), 2, "nothing is idle for a minute yet");
    assert_eq!(pool.take_older_than(Duration::from_millis(20)).len(), 1, "only the older one");
    let (_, mut left) = pool.pop(None).unwrap();
    assert!(still_open(&mut left));
    assert!(pool.pop(None).is_none());
}

#[tokio::test]
async fn an_upstream_kept_for_one_visitor_serves_no_other() {
    let (opener, _ends) = mux_pair();
    let pool = IdlePool::default();
    let minute = Duration::from_secs(60);
    let (one, two): (IpAddr, IpAddr) = ("203.0.113.1".parse().unwrap(), "203.0.113.2".parse().unwrap());
    pool.push(Either::Right(opener.open(b"1").unwrap()), minute, Some(one));
    pool.push(Either::Right(opener.open(b"2").unwrap()), minute, Some(two));
    assert!(pool.pop(Some("203.0.113.3".parse().unwrap())).is_none());
    assert!(pool.pop(Some(one)).is_some());
    assert!(pool.pop(Some(one)).is_none(), "the other visitor's upstream was handed out");
    assert!(pool.pop(Some(two)).is_some());
    assert_eq!(pool.len(), 0);
}
