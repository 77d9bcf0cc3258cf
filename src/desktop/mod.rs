//! Desktops in the browser: a desktop host runs TigerVNC on 127.0.0.1 inside its container
//! (images/managed-desktop), and its owner or an administrator opens it through Sluice with
//! noVNC. The person's signed-in page asks for a single-use ticket (tickets.rs, issued by
//! `ops::desktop`); the page's WebSocket presents it; Sluice relays the WebSocket to the VNC
//! server through a socket opened inside the container's network namespace (relay.rs),
//! answering the VNC handshake on both sides itself (rfb.rs), so the VNC password never
//! leaves Sluice. The web face serves the page and the socket (`web/desktop.rs`).

pub mod relay;
pub mod rfb;
pub mod tickets;
