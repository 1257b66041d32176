fn main() -> std::process::ExitCode {
    medlake::cli::main()
}
