//! The one way the CLI prints: human text (colour only on a terminal and
//! never with NO_COLOR), JSON under `--json`, nothing but errors under
//! `--quiet`. Errors follow the same mode.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::Value;

use crate::error::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Human,
    Json,
    Quiet,
}

/// Where output goes and how it looks.
pub struct Printer {
    pub mode: Mode,
    colour: bool,
    stderr_tty: bool,
}

impl Printer {
    pub fn new(json: bool, quiet: bool) -> Self {
        let mode = if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else {
            Mode::Human
        };
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Printer {
            mode,
            // The Windows console shows colours only once asked to
            // (virtual terminal processing); where it refuses, none.
            // Elsewhere the answer is "not Windows", and colour is on.
            colour: !no_color
                && std::io::stdout().is_terminal()
                && anstyle_query::windows::enable_ansi_colors().unwrap_or(true),
            stderr_tty: std::io::stderr().is_terminal(),
        }
    }

    /// A line of normal output (not in JSON or quiet mode).
    pub fn line(&self, text: &str) {
        if self.mode == Mode::Human {
            println!("{text}");
        }
    }

    /// A success line with a check mark.
    pub fn success(&self, text: &str) {
        if self.mode == Mode::Human {
            if self.colour {
                println!("\x1b[32m✓\x1b[0m {text}");
            } else {
                println!("✓ {text}");
            }
        }
    }

    /// A warning on stderr (human mode only; JSON carries it in the document).
    pub fn warn(&self, text: &str) {
        if self.mode == Mode::Human {
            if self.colour && self.stderr_tty {
                eprintln!("\x1b[33mwarning:\x1b[0m {text}");
            } else {
                eprintln!("warning: {text}");
            }
        }
    }

    /// The JSON document of a command (JSON mode only).
    pub fn json(&self, value: &Value) {
        if self.mode == Mode::Json {
            let mut out = std::io::stdout().lock();
            let _ = serde_json::to_writer_pretty(&mut out, value);
            let _ = writeln!(out);
        }
    }

    /// Text in bold green/red/yellow when colour is on.
    pub fn paint(&self, text: &str, colour: Colour) -> String {
        if !self.colour {
            return text.to_owned();
        }
        let code = match colour {
            Colour::Green => "32",
            Colour::Red => "31",
            Colour::Yellow => "33",
            Colour::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    /// Prints an error in the current mode.
    pub fn error(&self, err: &CliError) {
        if self.mode == Mode::Json {
            self.json_error(err);
            return;
        }
        let label = if self.colour && self.stderr_tty {
            "\x1b[31merror:\x1b[0m"
        } else {
            "error:"
        };
        eprintln!("{label} {}", err.message);
        if let Some(hint) = &err.hint {
            eprintln!("  hint: {hint}");
        }
        if let Some(url) = &err.url {
            eprintln!("  open: {url}");
        }
    }

    fn json_error(&self, err: &CliError) {
        let mut doc = serde_json::json!({
            "error": { "code": err.code, "message": err.message, "hint": err.hint }
        });
        if let Some(url) = &err.url {
            doc["error"]["url"] = serde_json::json!(url);
        }
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer_pretty(&mut out, &doc);
        let _ = writeln!(out);
    }

    /// A spinner on stderr while `f` runs, only when stderr is a terminal in
    /// human mode; nothing when piped.
    pub fn spin<T>(&self, message: &str, f: impl FnOnce() -> T) -> T {
        if self.mode != Mode::Human || !self.stderr_tty {
            return f();
        }
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(80));
        let out = f();
        bar.finish_and_clear();
        out
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Colour {
    Green,
    Red,
    Yellow,
    Bold,
}
