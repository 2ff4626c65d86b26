//! Turn an undefined symbol in pam_adopt.so into a link error: otherwise
//! libpam only finds out at dlopen time, inside sshd, and marks the module
//! faulty.
fn main() {
    println!("cargo::rustc-cdylib-link-arg=-Wl,-z,defs");
}
