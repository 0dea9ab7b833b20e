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

fn claim(kind: &str, name: &str, owner: &str, reserved_until: Option<i64>) -> ClaimRecord {
    ClaimRecord { kind: kind.into(), name: name.into(), owner_id: owner.into(), reserved_until }
}

#[tokio::test]
async fn claims_round_trip_per_region() {
    for (s, _d) in backends().await {
        // Unique regions: a shared PostgreSQL keeps rows of earlier runs and other tests.
        let here = format!("r-{}", uuid::Uuid::new_v4());
        let there = format!("r-{}", uuid::Uuid::new_v4());
        assert!(s.load_claims(&here).await.unwrap().is_empty());
        s.apply_claim_changes(
            &here,
            &[
                ClaimChange::Upsert(claim("subdomain", "keepme", "o1", None)),
                ClaimChange::Upsert(claim("tcp", "20001", "o1", None)),
                ClaimChange::Upsert(claim("udp", "20001", "o2", Some(5000))),
            ],
        )
        .await
        .unwrap();
        s.apply_claim_changes(&there, &[ClaimChange::Upsert(claim("subdomain", "keepme", "o9", None))]).await.unwrap();
        // Upsert replaces; delete removes; both in order, in one transaction.
        s.apply_claim_changes(
            &here,
            &[
                ClaimChange::Upsert(claim("subdomain", "keepme", "o1", Some(9000))),
                ClaimChange::Delete { kind: "tcp".into(), name: "20001".into() },
                ClaimChange::Upsert(claim("tcp", "20002", "o1", None)),
                ClaimChange::Delete { kind: "tcp".into(), name: "20002".into() },
                ClaimChange::Delete { kind: "tcp".into(), name: "nothing-here".into() },
            ],
        )
        .await
        .unwrap();
        assert_eq!(
            s.load_claims(&here).await.unwrap(),
            vec![claim("subdomain", "keepme", "o1", Some(9000)), claim("udp", "20001", "o2", Some(5000))]
        );
        // Other regions (servers sharing one PostgreSQL) are left alone.
        assert_eq!(s.load_claims(&there).await.unwrap(), vec![claim("subdomain", "keepme", "o9", None)]);

        // Pruning removes ended reservations only, never names in use.
        assert_eq!(s.prune_claims(&here, 5000).await.unwrap(), 1);
        assert_eq!(s.load_claims(&here).await.unwrap(), vec![claim("subdomain", "keepme", "o1", Some(9000))]);
        assert_eq!(s.prune_claims(&there, i64::MAX).await.unwrap(), 0);

        // Replacing rewrites one region whole.
        s.replace_claims(&here, &[claim("tcp", "20005", "o3", None), claim("subdomain", "other", "o3", Some(7))])
            .await
            .unwrap();
        assert_eq!(
            s.load_claims(&here).await.unwrap(),
            vec![claim("subdomain", "other", "o3", Some(7)), claim("tcp", "20005", "o3", None)]
        );
        s.replace_claims(&here, &[]).await.unwrap();
        assert!(s.load_claims(&here).await.unwrap().is_empty());
        assert_eq!(s.load_claims(&there).await.unwrap().len(), 1);
        s.replace_claims(&there, &[]).await.unwrap();
    }
}

#[tokio::test]
async fn claims_survive_reopen_and_bad_rows_are_returned_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(None, dir.path()).await.unwrap();
        s.apply_claim_changes(
            "local",
            &[
                ClaimChange::Upsert(claim("subdomain", "keepme", "o1", None)),
                // Garbage the registry must skip; the store hands it over untouched.
                ClaimChange::Upsert(claim("carrier-pigeon", "Not A Name", "o1", Some(-1))),
            ],
        )
        .await
        .unwrap();
        s.close().await;
    }
    let s = Store::open(None, dir.path()).await.unwrap();
    assert_eq!(
        s.load_claims("local").await.unwrap(),
        vec![claim("carrier-pigeon", "Not A Name", "o1", Some(-1)), claim("subdomain", "keepme", "o1", None)]
    );
    // A row whose columns do not even decode (SQLite is dynamically typed) is skipped.
    sqlx::query("INSERT INTO registry_claims (region, kind, name, owner_id, reserved_until, updated_at) VALUES ('local', 'tcp', '20001', 'o1', 'soon', 0)")
        .execute(&s.pool)
        .await
        .unwrap();
    assert_eq!(s.load_claims("local").await.unwrap().len(), 2);
}

#[tokio::test]
async fn token_rights_are_stored_and_read_back() {
    for (s, _d) in backends().await {
        let rights = Rights::parse(Some(&["docs", "ci-*"]), Some(&["20000-20009", "20500"])).unwrap();
        let (t, raw) = s.create_token_with(None, "ci", &rights).await.unwrap();
        assert_eq!(t.rights, rights);
        assert_eq!(s.verify_token(&raw).await.unwrap().unwrap().rights, rights);
        let listed = s.list_tokens(Some(&t.owner_id)).await.unwrap();
        assert_eq!(listed[0].rights, rights);
        let (u, raw_u) = s.create_token(Some(&t.owner_id), "free").await.unwrap();
        assert!(s.verify_token(&raw_u).await.unwrap().unwrap().rights.is_unrestricted());
        // Rights spoiled by another program: the token is refused, naming it; never read as
        // a token without limits.
        sqlx::query("UPDATE tokens SET allowed_ports = $1 WHERE id = $2")
            .bind("70000")
            .bind(&u.id)
            .execute(&s.pool)
            .await
            .unwrap();
        let e = s.verify_token(&raw_u).await.unwrap_err();
        assert!(matches!(&e, StoreError::BadRights { id, .. } if *id == u.id), "{e}");
        // Listed as allowing nothing, and still revocable.
        let listed = s.list_tokens(Some(&t.owner_id)).await.unwrap();
        assert_eq!(listed.iter().find(|r| r.id == u.id).unwrap().rights, Rights::nothing());
        assert!(s.revoke_token(&u.id, Some(&t.owner_id)).await.unwrap().is_some());
        assert!(s.list_tokens(None).await.is_ok());
    }
}

/// A database made before token rights existed (schema version 2) gets the new columns, and
/// its tokens keep working without limits.
#[tokio::test]
async fn tokens_from_before_rights_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(None, dir.path()).await.unwrap();
    sqlx::query("DELETE FROM rustunnel_migrations WHERE version = 3").execute(&s.pool).await.unwrap();
    for col in ["allowed_subdomains", "allowed_ports"] {
        s.pool.execute(format!("ALTER TABLE tokens DROP COLUMN {col}").as_str()).await.unwrap();
    }
    sqlx::query("INSERT INTO owners (id, created_at) VALUES ('o', 1)").execute(&s.pool).await.unwrap();
    sqlx::query("INSERT INTO tokens (id, owner_id, label, token_hash, created_at) VALUES ('t', 'o', 'old', $1, 1)")
        .bind(hash_token("rt_old"))
        .execute(&s.pool)
        .await
        .unwrap();
    s.close().await;
    let s = Store::open(None, dir.path()).await.unwrap();
    let t = s.verify_token("rt_old").await.unwrap().unwrap();
    assert_eq!((t.id.as_str(), t.rights.is_unrestricted()), ("t", true));
}
