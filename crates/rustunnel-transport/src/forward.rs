//! [`forward_write!`]: the `AsyncWrite` methods a wrapper only passes on to the stream it
//! wraps. A function cannot add methods to a trait impl, so this one piece is a macro; what it
//! writes is the same code a wrapper would spell out, with no indirection added.

#[doc(hidden)]
pub use std::{io as __io, pin::Pin as __Pin, task::Context as __Context, task::Poll as __Poll};
#[doc(hidden)]
pub use tokio::io::AsyncWrite as __AsyncWrite;

/// Inside an `impl AsyncWrite for Wrapper<T>` (with `Wrapper<T>: Unpin`), writes each named
/// method (`poll_write`, `poll_write_vectored`, `is_write_vectored`, `poll_flush`,
/// `poll_shutdown`) as a call of the same method on the field `inner`:
/// `forward_write!(inner: poll_flush, poll_shutdown);`.
#[macro_export]
macro_rules! forward_write {
    ($inner:ident: $($method:ident),+ $(,)?) => {
        $($crate::forward_write!(@one $inner $method);)+
    };
    (@one $inner:ident poll_write) => {
        fn poll_write(
            mut self: $crate::forward::__Pin<&mut Self>,
            cx: &mut $crate::forward::__Context<'_>,
            buf: &[u8],
        ) -> $crate::forward::__Poll<$crate::forward::__io::Result<usize>> {
            $crate::forward::__AsyncWrite::poll_write($crate::forward::__Pin::new(&mut self.$inner), cx, buf)
        }
    };
    (@one $inner:ident poll_write_vectored) => {
        fn poll_write_vectored(
            mut self: $crate::forward::__Pin<&mut Self>,
            cx: &mut $crate::forward::__Context<'_>,
            bufs: &[$crate::forward::__io::IoSlice<'_>],
        ) -> $crate::forward::__Poll<$crate::forward::__io::Result<usize>> {
            $crate::forward::__AsyncWrite::poll_write_vectored($crate::forward::__Pin::new(&mut self.$inner), cx, bufs)
        }
    };
    (@one $inner:ident is_write_vectored) => {
        fn is_write_vectored(&self) -> bool {
            $crate::forward::__AsyncWrite::is_write_vectored(&self.$inner)
        }
    };
    (@one $inner:ident poll_flush) => {
        $crate::forward_write!(@unit $inner poll_flush);
    };
    (@one $inner:ident poll_shutdown) => {
        $crate::forward_write!(@unit $inner poll_shutdown);
    };
    (@unit $inner:ident $method:ident) => {
        fn $method(
            mut self: $crate::forward::__Pin<&mut Self>,
            cx: &mut $crate::forward::__Context<'_>,
        ) -> $crate::forward::__Poll<$crate::forward::__io::Result<()>> {
            $crate::forward::__AsyncWrite::$method($crate::forward::__Pin::new(&mut self.$inner), cx)
        }
    };
}
