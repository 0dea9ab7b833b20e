//! Store tests run against SQLite always, and against PostgreSQL too when
//! `RUSTUNNEL_TEST_POSTGRES_URL` is set (CI starts a real server and sets it).
use super::*;

async fn backends() -> Vec<(Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![(Store::open(None, dir.path()).await.unwrap(), Some(dir))];
    if let Ok(url) = std::env::var("RUSTUNNEL_TEST_POSTGRES_URL") {
        let s = Store::open(Some(&url), Path::new(".")).await.unwrap();
        v.push((s, None));
    }
    v
}

#[tokio::test]
async fn tokens_are_hashed_and_scoped() {
    for (s, _d) in backends().await {
        let (a, raw_a) = s.create_token(None, "a").await.unwrap();
        let (a2, _) = s.create_token(Some(&a.owner_id), "a2").await.unwrap();
        let (b, raw_b) = s.create_token(None, "b").await.unwrap();
        assert_eq!(a.owner_id, a2.owner_id);
        assert_ne!(a.owner_id, b.owner_id);
        assert_eq!(s.verify_token(&raw_a).await.unwrap().unwrap().id, a.id);
        assert!(s.verify_token("rt_wrong").await.unwrap().is_none());
        assert!(s.verify_token(&format!("{raw_a}\n")).await.unwrap().is_none());
        let mine = s.list_tokens(Some(&a.owner_id)).await.unwrap();
        assert_eq!(mine.len(), 2);
        assert!(mine.iter().any(|t| t.id == a.id && t.last_used_at.is_some()));
        // Another owner's token is not found, not revoked.
        assert!(s.revoke_token(&b.id, Some(&a.owner_id)).await.unwrap().is_none());
        assert!(s.verify_token(&raw_b).await.unwrap().is_some());
        assert!(s.revoke_token(&b.id, Some(&b.owner_id)).await.unwrap().is_some());
        assert!(s.verify_token(&raw_b).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn history_round_trip_and_filters() {
    for (s, _d) in backends().await {
        let owner = uuid::Uuid::new_v4().to_string();
        for (i, proto) in ["http", "tcp", "http"].iter().enumerate() {
            s.record_open(&HistoryRecord {
                id: format!("{owner}-{i}"),
                owner_id: owner.clone(),
                name: "t".into(),
                protocol: proto.to_string(),
                public_url: "http://x".into(),
                port: Some(20000),
                opened_at: 1000 + i as i64,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        s.record_close(
            &format!("{owner}-0"),
            &CloseRecord { closed_at: 5000, reason: "closed_by_api".into(), bytes_in: 10, ..Default::default() },
        )
        .await
        .unwrap();
        let q = |protocol: Option<&str>, active| HistoryQuery {
            owner_id: Some(owner.clone()),
            protocol: protocol.map(String::from),
            active,
            limit: 25,
            offset: 0,
        };
        let all = s.list_history(&q(None, None)).await.unwrap();
        assert_eq!(all.iter().map(|h| h.opened_at).collect::<Vec<_>>(), vec![1002, 1001, 1000]);
        assert_eq!(s.list_history(&q(Some("http"), None)).await.unwrap().len(), 2);
        let closed = s.list_history(&q(None, Some(false))).await.unwrap();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].close_reason.as_deref(), Some("closed_by_api"));
        assert_eq!(closed[0].bytes_in, 10);
        assert_eq!(s.list_history(&q(None, Some(true))).await.unwrap().len(), 2);
    }
}

#[tokio::test]
async fn history_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(None, dir.path()).await.unwrap();
        s.record_open(&HistoryRecord { id: "h1".into(), owner_id: "o".into(), opened_at: 1, ..Default::default() })
            .await
            .unwrap();
        s.close().await;
    }
    let s = Store::open(None, dir.path()).await.unwrap();
    assert_eq!(s.close_orphans("server_restart").await.unwrap(), 1);
    let h =
        s.list_history(&HistoryQuery { owner_id: Some("o".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(h[0].close_reason.as_deref(), Some("server_restart"));
}
