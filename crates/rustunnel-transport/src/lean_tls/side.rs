//! What a lean connection needs of either end of an unbuffered rustls connection.
use std::ops::Deref;

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{UnbufferedConnectionCommon, UnbufferedStatus};
use rustls::ProtocolVersion;

use crate::record::{Kernel, RecordError, Records};

/// One side of an unbuffered rustls connection.
pub trait Side: Deref<Target = UnbufferedConnectionCommon<Self::Data>> + Send + Unpin + 'static {
    type Data: Send + Unpin + 'static;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn is_tls13(&self) -> bool {
        self.protocol_version() == Some(ProtocolVersion::TLSv1_3)
    }
    /// rustls hands over the traffic keys after the handshake.
    fn into_records(self) -> Result<Records<Kernel<Self::Data>>, RecordError>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_records(self) -> Result<Records<Kernel<Self::Data>>, RecordError> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        // Session tickets from the server are stored by rustls for resumption.
        Records::new(secrets, kernel, |k, ticket| Ok(k.handle_new_session_ticket(ticket)?))
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn into_records(self) -> Result<Records<Kernel<Self::Data>>, RecordError> {
        let (secrets, kernel) = self.dangerous_into_kernel_connection()?;
        // A client never sends session tickets (handshake message type 4).
        Records::new(secrets, kernel, |_, _| Err(RecordError::UnexpectedHandshake(4)))
    }
}
