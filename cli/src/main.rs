//! `coditect`: the end-user command line. Licensing commands come with the CLI
//! issue; for now it reports its version and this machine's hardware id.

use clap::Parser;

/// CODITECT command-line tool.
#[derive(Parser)]
#[command(name = "coditect", version, about)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
