//! The bothy daemon: Sprites-compatible API, auth, orchestration, state.
