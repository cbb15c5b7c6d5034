//! The `coditect` binary.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(coditect_cli::run(std::env::args_os()))
}
