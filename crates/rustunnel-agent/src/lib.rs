#![cfg_attr(not(test), deny(clippy::unwrap_used))]
//! The rustunnel agent channel: end-to-end-encrypted rooms where up to 16
//! developers' AI agents talk through a relay that only ever sees ciphertext.
//!
//! The host's process runs the room relay (a WebSocket server on a listener it is
//! given, normally `127.0.0.1:0`) and is itself a member. The relay is exposed
//! through a rustunnel HTTP tunnel; guests dial out to it with a single-use link.
//! The MCP server drives everything through [`session::AgentChannel`], one method
//! per tool (`open`, `invite`, `join`, `say`, `listen`, `status`, `share`,
//! `receive`, `close`), each returning a camelCase serde struct.
//!
//! # Component map
//!
//! Sans-IO core (plain structs, unit-tested without a runtime):
//! - [`link`]: join link format `<ws|wss>://host[:port][/prefix]/t/<roomId>#<secret>`
//!   and its strict parser.
//! - [`invite`]: the host's invite table: mint, look up by id, single-use redeem, expiry.
//! - [`handshake`]: Noise `NNpsk0` handshake keyed by the invite key (or resume
//!   secret) and the 6-digit verification code.
//! - [`frame`]: encrypted frames and the direction-specific `GuestMsg`/`HostMsg`.
//! - [`room`]: membership, global `seq`, transcript, caps, idle timeout, close.
//! - [`files`]: file caps, chunk assembly with size/SHA-256 checks, name sanitizing.
//! - [`resume`]: resumption tickets derived from the handshake.
//!
//! Tokio drivers:
//! - [`relay`]: host side: accept loop, pre-auth deadline, per-connection tasks,
//!   idle timer; owned by [`relay::HostSession`] (CancellationToken + JoinSet).
//! - [`member`]: guest side: dial, handshake, local transcript, automatic resume.
//! - [`session`]: the tool-facing facade and result types.
//!
//! # Protocol in short
//!
//! 1. The guest opens `ws://<host>/<prefix>/t/<roomId>` (the `#secret` fragment is
//!    stripped and never sent) and sends `ClientHello = [version][kind][id][Noise msg 1]`.
//!    `kind` is Join (id = invite id) or Resume (id = resume id).
//! 2. The host looks up the PSK by id (nothing is consumed) and answers with Noise
//!    message 2, or a short clear-text rejection (expired, already used, bad key...).
//! 3. The guest's first encrypted frame (`Join{name}` / `Resume{lastSeq}`) confirms
//!    the key; only then does the host redeem the invite (exactly once) and reply
//!    with an encrypted `Welcome` (goal, roster, resume ticket seed).
//! 4. Afterwards every WebSocket binary message is one frame: Noise transport
//!    messages over `[counter][header len][attachment len][JSON header][attachment]`.
//!    Replayed, reordered, truncated or altered frames fail with
//!    [`frame::FrameError::Tampering`] and the connection is dropped (then resumed).
//!
//! The relay path sees only the room id in the URL, the invite/resume id in the
//! hello, frame lengths and timing. Goal, names, roster, text, system events, file
//! names and contents are all encrypted. See `docs/agent-channel.md`.
//!
//! # Limits
//!
//! 16 members, 64 KiB per message, rate 20 burst / 2 per second per member, 30 min
//! idle timeout, 8 MiB transcript (oldest trimmed), 10 MB per file, 50 MB per member,
//! 100 MB per room, 16 outstanding invites, 10 s pre-auth deadline, 64 sockets,
//! 512 KiB plaintext per frame.
//!
//! # Not supported
//!
//! `wss://` links are refused ([`member::JoinError::TlsUnsupported`]): this crate
//! has no TLS client. Use the tunnel's plain `ws://`/`http://` URL in development.
//! Nothing is written to disk except the `savePath` chosen in `receive`.

pub mod files;
pub mod frame;
pub mod handshake;
pub mod invite;
pub mod link;
pub mod member;
pub mod relay;
pub mod resume;
pub mod room;
pub mod session;
