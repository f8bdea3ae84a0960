//! Minutes of real probing through the `vipgate` binary against a real MariaDB with
//! `max_connect_errors = 5`, from source addresses other than 127.0.0.1 (MariaDB exempts
//! loopback 127.0.0.1 from host blocking): `kind = "tcp"`, `kind = "mysql"` with a user, and
//! greeting-only `kind = "mysql"`, must never get the balancer's address blocked.
//!
//! `VIPGATE_MARIADB_SOAK_SECS` sets the duration (default 180 s).

mod common;
#[path = "support/mariadb.rs"]
mod mariadb_support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use common::*;
use mariadb_support::MariaDb;
use vipgate::mysql::{self, Credentials};

const USER: &str = "vgsoak";
const PASSWORD: &str = "s0ak-s3cret";
const WITH_USER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const GREETING_ONLY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
const TCP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);

fn host_errors(db: &MariaDb, ip: Ipv4Addr) -> u64 {
    let out = db
        .sql(&format!("SELECT SUM_CONNECT_ERRORS FROM performance_schema.host_cache WHERE IP = '{ip}'"))
        .unwrap_or_default();
    out.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn connections(db: &MariaDb) -> u64 {
    let out = db.sql("SHOW GLOBAL STATUS LIKE 'Connections'").unwrap_or_default();
    out.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[test]
fn minutes_of_mysql_probes_never_block_the_balancer() {
    let Some(db) = MariaDb::start(&["--max-connect-errors=5", "--performance-schema=ON"]) else { return };
    db.sql(&format!(
        "CREATE USER '{USER}'@'127.0.0.%' IDENTIFIED BY '{PASSWORD}'; GRANT PROCESS ON *.* TO '{USER}'@'127.0.0.%';"
    ))
    .expect("create probe user");
    let secs: u64 = std::env::var("VIPGATE_MARIADB_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(180);
    let (a, b, c) = (free_addr(), free_addr(), free_addr());
    let cfg = format!(
        "{}\n[services.withuser]\nbind = \"{a}\"\nsource = \"{WITH_USER}\"\n[services.withuser.check]\nkind = \"mysql\"\n\
         user = \"{USER}\"\npassword = \"{PASSWORD}\"\ninterval = \"25ms\"\ntimeout = \"2s\"\n\
         [[services.withuser.servers]]\nname = \"db\"\naddress = \"{db_addr}\"\n\
         [services.greeting]\nbind = \"{b}\"\nsource = \"{GREETING_ONLY}\"\n[services.greeting.check]\nkind = \"mysql\"\n\
         interval = \"25ms\"\ntimeout = \"2s\"\n[[services.greeting.servers]]\nname = \"db\"\naddress = \"{db_addr}\"\n\
         [services.tcp]\nbind = \"{c}\"\nsource = \"{TCP}\"\n[services.tcp.check]\nkind = \"tcp\"\n\
         interval = \"25ms\"\ntimeout = \"2s\"\n[[services.tcp.servers]]\nname = \"db\"\naddress = \"{db_addr}\"\n",
        global(""),
        db_addr = db.addr(),
    );
    let c0 = connections(&db);
    let v = Vipgate::spawn(&cfg);
    std::thread::sleep(Duration::from_secs(secs));
    let probes = connections(&db) - c0;
    // Stop vipgate the way an operator does: SIGTERM lets every probe in flight finish
    // (a SIGKILL mid-handshake would be an aborted connect of the test's own making).
    let mut v = v;
    v.signal(libc::SIGTERM);
    v.expect_exit_zero("after the soak");
    let log = v.log();

    println!("{probes} probe connections in {secs} s from {WITH_USER}, {GREETING_ONLY} and {TCP}");
    // Enough probes that max_connect_errors = 5 would have tripped many times over.
    assert!(probes > 30 * secs, "only {probes} probes in {secs} s: vipgate did not probe\n{log}");
    assert!(log.contains("server is UP") || log.contains("server is DOWN"), "{log}");
    for ip in [WITH_USER, GREETING_ONLY, TCP] {
        assert_eq!(host_errors(&db, ip), 0, "MariaDB counted connect errors against {ip}");
        // And a real login from that address still works.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let login = rt.block_on(async {
            let s = vipgate::net::connect(db.addr(), Some(IpAddr::V4(ip)), Some(Duration::from_secs(10))).await?;
            let creds = Credentials { user: USER.into(), password: PASSWORD.into() };
            mysql::check(s, Some(&creds), Duration::from_secs(10))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        });
        assert!(login.is_ok(), "login from {ip} after the soak: {:?}", login.err());
    }
}
