//! The local terminal: raw mode that is always undone, and its size.

use std::io::IsTerminal;

/// Puts the terminal in raw mode for as long as it lives. Dropping it restores
/// the terminal, so every return path, `?` and unwinding panic included, does.
pub struct RawMode {
    active: bool,
}

impl RawMode {
    /// Enables raw mode if stdin is a terminal; otherwise does nothing.
    pub fn enable_if_terminal() -> std::io::Result<Self> {
        if !stdin_is_terminal() {
            return Ok(Self { active: false });
        }
        crossterm::terminal::enable_raw_mode()?;
        Ok(Self { active: true })
    }

    /// A guard that changes nothing (non-TTY sessions).
    pub fn inactive() -> Self {
        Self { active: false }
    }

    pub fn is_active(&self) -> bool {
        self.active
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if self.active {
            // Nothing better to do if the terminal is gone already.
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

/// (cols, rows) of the local terminal, or 80x24 when there is none.
pub fn size() -> (u16, u16) {
    match crossterm::terminal::size() {
        Ok((cols, rows)) if cols > 0 && rows > 0 => (cols, rows),
        _ => (80, 24),
    }
}
