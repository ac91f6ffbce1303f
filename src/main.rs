use std::process::ExitCode;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("MNPFLOW_LOG"))
        .with_writer(std::io::stderr)
        .init();
    // Flush subnormal floats to zero here and in rayon's global pool, where burn's CPU
    // backend runs large operations (see `model::denormal`).
    mnpflow::model::denormal::flush_on_this_thread();
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .start_handler(|_| mnpflow::model::denormal::flush_on_this_thread())
        .build_global()
    {
        tracing::debug!("rayon's global pool was already built: {e}");
    }
    match mnpflow::cli::run() {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`mnpflow flows x.pcap | head`) is not an error.
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("mnpflow: error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
