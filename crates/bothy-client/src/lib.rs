//! Typed HTTP and WebSocket client of the bothy API.
