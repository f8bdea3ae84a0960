//! Fixed-seed hashing for `source` balancing. Never std's RandomState: every controller
//! and every restart must send a given client to the same server.

use std::net::IpAddr;

const SEED: u64 = 0x7669_7067_6174_6531; // "vipgate1"

/// Murmur3's 64-bit finaliser: full avalanche, so HRW scores are independent per server.
#[inline]
pub fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn bytes_key(bytes: &[u8]) -> u64 {
    // FNV-1a over the bytes, then mixed; inputs are short (names, addresses).
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ SEED;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix64(h)
}

pub fn server_key(name: &str) -> u64 {
    bytes_key(name.as_bytes())
}

/// Hash key of a client address. IPv4-mapped IPv6 hashes as the IPv4 address, so a
/// dual-stack listener places a client the same way as a v4 one.
pub fn client_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => bytes_key(&v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => bytes_key(&v4.octets()),
            None => bytes_key(&v6.octets()),
        },
    }
}

/// The per-(client, server) hash behind the HRW score.
#[inline]
pub fn hrw_hash(client: u64, server: u64) -> u64 {
    mix64(client ^ server.rotate_left(17))
}

/// Weighted rendezvous (HRW) score: the highest score wins. `w / -ln(u)` makes the
/// probability of winning proportional to the weight, and removing one server only moves
/// the clients that server had won.
#[inline]
pub fn hrw_score(client: u64, server: u64, weight: u32) -> f64 {
    let h = hrw_hash(client, server);
    // u in (0, 1]: 53 random bits, never zero.
    let u = ((h >> 11) + 1) as f64 / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln().min(-f64::MIN_POSITIVE)
}
