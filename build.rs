// `sqlx::migrate!` (`store::migrator`) embeds migrations/ at build time: rebuild when a file is
// added there, not only when one the build already read changes.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
