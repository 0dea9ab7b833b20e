//! `rustunnel p2p <port> --secret S --name N` (publish a local service) and
//! `rustunnel p2p <local-port> --secret S --target N` (reach it through a local listener).
use clap::Args;
use rustunnel_client::p2p::{P2pHandle, P2pOptions, P2pRole};
use rustunnel_client::{Event, TlsOptions};
use rustunnel_proto::Protocol;

use crate::output::Printer;
use crate::tunnels::ConnectArgs;

#[derive(Args, Debug, Clone)]
pub struct P2pArgs {
    /// With --name: the port of the local service to publish. With --target: the local port
    /// to listen on (127.0.0.1; 0 picks a free one).
    pub port: u16,
    /// Shared secret; publisher and visitors must use the same one. Never sent over the
    /// network (a PAKE proves it).
    #[arg(long, env = "RUSTUNNEL_P2P_SECRET", hide_env_values = true)]
    pub secret: String,
    /// Publish the local service under this name.
    #[arg(long, conflicts_with = "target", required_unless_present = "target")]
    pub name: Option<String>,
    /// Connect to the published service of this name.
    #[arg(long)]
    pub target: Option<String>,
    /// tcp or udp.
    #[arg(long, default_value = "tcp")]
    pub protocol: Protocol,
    /// Host of the local service (publisher) or address to listen on (visitor).
    #[arg(long)]
    pub local_host: Option<String>,
    /// Never try the direct path: always relay through the server.
    #[arg(long)]
    pub relay_only: bool,
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// Reports arguments that cannot work (exit code 2, as clap's own usage errors).
fn bad_arguments(printer: &mut Printer, message: String, hint: &str) -> i32 {
    printer.event(&Event::Error { code: "bad_arguments".into(), message, hint: hint.into(), fatal: true });
    2
}

pub async fn run(a: P2pArgs) -> i32 {
    let mut printer = Printer::new(a.connect.json);
    if a.protocol == Protocol::Http {
        return bad_arguments(
            &mut printer,
            "P2P tunnels are tcp or udp".into(),
            "use --protocol tcp or --protocol udp",
        );
    }
    let role = match (&a.name, &a.target) {
        (Some(name), _) => P2pRole::Publish {
            name: name.clone(),
            local_host: a.local_host.as_deref().map_or("localhost", rustunnel_client::config::local_host).to_string(),
            local_port: a.port,
        },
        (None, Some(target)) => {
            let host = a.local_host.as_deref().map_or("127.0.0.1", rustunnel_client::config::local_host);
            let bind = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => std::net::SocketAddr::new(ip, a.port),
                Err(_) => {
                    let message = format!("cannot listen on '{host}:{}'", a.port);
                    return bad_arguments(&mut printer, message, "--local-host takes an IP address for visitors");
                }
            };
            P2pRole::Connect { target: target.clone(), bind }
        }
        // clap requires one of them; still, never exit without saying why.
        (None, None) => {
            let message = "p2p needs --name (publish) or --target (connect)".into();
            return bad_arguments(&mut printer, message, "see `rustunnel p2p --help`");
        }
    };
    let server = match crate::manage::resolve_server(&a.connect).await {
        Ok(s) => s,
        Err(e) => {
            printer.event(&Event::Error {
                code: "region_error".into(),
                message: e.to_string(),
                hint: "list regions with `rustunnel regions`".into(),
                fatal: true,
            });
            return 1;
        }
    };
    let mut opts = P2pOptions::new(server, a.connect.token.trim(), a.secret.clone(), role);
    opts.tls = TlsOptions { insecure: a.connect.insecure, ca: a.connect.ca.clone() };
    opts.protocol = a.protocol;
    opts.direct = !a.relay_only;
    opts.reconnect = !a.connect.no_reconnect;
    let mut h = P2pHandle::spawn(opts);
    let cancel = h.cancel_token();
    let fatal = crate::tunnels::print_events(&mut h.events, &cancel, &mut printer).await;
    match h.join().await {
        Ok(()) if !fatal => 0,
        _ => 1,
    }
}
