//! `GET /api/p2p`: published P2P services and their links, with each link's path (direct,
//! relayed or pending) and the bytes relayed for it. A caller sees its own services and links;
//! the admin token sees everything.
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use rustunnel_api_types::{ErrorBody, P2pLink, P2pList, P2pPeer, P2pService};

use super::extract::Caller;
use crate::p2p::LinkState;
use crate::state::Shared;

/// P2P services visible to the caller, by owner then name; links by age (oldest first).
#[utoipa::path(get, path = "/api/p2p", tag = "tunnels", security(("bearer" = [])),
    responses(
        (status = 200, description = "P2P services and links visible to the caller", body = P2pList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Too many failed authentications from this address", body = ErrorBody),
    ))]
pub async fn list(State(shared): State<Arc<Shared>>, caller: Caller) -> Json<P2pList> {
    Json(P2pList { services: visible_services(&shared, &caller) })
}

fn peer(shared: &Shared, session_id: &str) -> P2pPeer {
    let s = shared.session(session_id);
    P2pPeer {
        session_id: session_id.to_string(),
        client_addr: s.as_ref().map(|s| s.peer.to_string()).unwrap_or_default(),
        agent: s.map(|s| s.agent.clone()).unwrap_or_default(),
    }
}

/// The services and links `caller` may see, as REST DTOs.
pub fn visible_services(shared: &Shared, caller: &Caller) -> Vec<P2pService> {
    // Copy what is needed out of the table, then resolve sessions without holding its lock.
    type Key = (String, String);
    let mut services: BTreeMap<Key, (String, Option<String>)> = BTreeMap::new();
    let mut links: Vec<(Key, String, String, String, u64, u64, std::time::Duration)> = Vec::new();
    shared.p2p().with_table(|table| {
        for (owner, name, protocol, session) in table.published() {
            if caller.may_see(owner) {
                services
                    .insert((owner.to_string(), name.to_string()), (protocol.to_string(), Some(session.to_string())));
            }
        }
        for l in table.links() {
            if !caller.may_see(&l.owner) {
                continue;
            }
            let mode = match (&l.state, &l.mode) {
                (LinkState::Accepted, Some(m)) => m.clone(),
                _ => "pending".to_string(),
            };
            let (bytes_in, bytes_out, _, _) = l.stats.get();
            let key = (l.owner.clone(), l.name.clone());
            services.entry(key.clone()).or_insert_with(|| (l.protocol.to_string(), None));
            links.push((key, l.id.clone(), l.visitor.clone(), mode, bytes_in, bytes_out, l.created.elapsed()));
        }
    });
    links.sort_by(|a, b| b.6.cmp(&a.6).then_with(|| a.1.cmp(&b.1)));
    services
        .into_iter()
        .map(|(key, (protocol, publisher))| P2pService {
            links: links
                .iter()
                .filter(|l| l.0 == key)
                .map(|(_, id, visitor, mode, bytes_in, bytes_out, age)| P2pLink {
                    link_id: id.clone(),
                    visitor: peer(shared, visitor),
                    mode: mode.clone(),
                    relayed_bytes_in: *bytes_in,
                    relayed_bytes_out: *bytes_out,
                    age_secs: age.as_secs(),
                })
                .collect(),
            publisher: publisher.map(|s| peer(shared, &s)),
            name: key.1,
            protocol,
            owner_id: key.0,
        })
        .collect()
}
