//! An NSS database as chromium on Linux reads it from `$HOME/.pki/nssdb`: a CA it trusts for
//! servers and client certificates it may present, made with Debian's `libnss3-tools`
//! (`certutil`, `pk12util`) and `openssl` (PEM to PKCS#12, the form pk12util imports).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{require_tool, run_ok};

/// The database under `home` (created empty, no password, if absent).
#[derive(Debug)]
pub struct NssDb {
    dir: PathBuf,
}

impl NssDb {
    pub fn create(home: &Path) -> Self {
        let dir = home.join(".pki/nssdb");
        std::fs::create_dir_all(&dir).expect("the nssdb dir");
        let db = NssDb { dir };
        if !db.dir.join("cert9.db").exists() {
            run_ok(db.certutil().arg("-N").arg("--empty-password"));
        }
        db
    }

    fn certutil(&self) -> Command {
        let mut command = Command::new(require_tool("certutil"));
        command.arg("-d").arg(self.sql());
        command
    }

    fn sql(&self) -> String {
        format!("sql:{}", self.dir.display())
    }

    /// Trusts the CA in `ca` (PEM) to issue server certificates (`-t C,,`).
    pub fn trust_ca(&self, nickname: &str, ca: &Path) -> &Self {
        run_ok(
            self.certutil()
                .args(["-A", "-t", "C,,", "-n", nickname, "-i"])
                .arg(ca),
        );
        self
    }

    /// Imports a client certificate and its key (PEM files) under `nickname`.
    pub fn add_client(&self, nickname: &str, cert: &Path, key: &Path) -> &Self {
        let p12 = self.dir.join(format!("{nickname}.p12"));
        run_ok(
            Command::new(require_tool("openssl"))
                .args(["pkcs12", "-export", "-passout", "pass:", "-name", nickname])
                .arg("-in")
                .arg(cert)
                .arg("-inkey")
                .arg(key)
                .arg("-out")
                .arg(&p12),
        );
        run_ok(
            Command::new(require_tool("pk12util"))
                .args(["-W", ""])
                .arg("-d")
                .arg(self.sql())
                .arg("-i")
                .arg(&p12),
        );
        std::fs::remove_file(&p12).expect("remove the PKCS#12 copy");
        self
    }

    /// What the database holds, as `certutil -L` lists it.
    pub fn list(&self) -> String {
        run_ok(self.certutil().arg("-L"))
    }
}
