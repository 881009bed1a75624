fn main() -> std::process::ExitCode {
    hdfs_ingest::cli::main()
}
