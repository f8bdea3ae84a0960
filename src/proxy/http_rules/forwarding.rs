//! Forwarding headers (X-Forwarded-*, `Forwarded`) and who may bring their own.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::headers::{valid_value, Headers};
use super::tokens::is_tchar;
use crate::config::Http;

/// What vipgate knows about the client of one request.
#[derive(Debug, Clone, Copy)]
pub struct ClientFacts<'a> {
    /// The client: the PROXY protocol source, else the peer.
    pub client: IpAddr,
    /// The TCP peer, which sent the PROXY header if there was one: `trusted_forwarders`
    /// is matched against it, never against an address a PROXY header claims.
    pub peer: IpAddr,
    /// The client spoke TLS to vipgate.
    pub tls: bool,
    /// The request's one authority (`proxy::http::policy::authority`).
    pub host: Option<&'a str>,
    /// The address the client connected to.
    pub local: SocketAddr,
}

/// Add X-Forwarded-For / -Proto / -Host / -Port and RFC 7239 `Forwarded` as `cfg` asks.
///
/// Only a peer inside `cfg.trusted_forwarders` (a front balancer) may bring its own: from
/// anyone else every incoming forwarding header ([`is_forwarding_header`]) is removed
/// first, whatever `cfg` enables, so that no client can claim another address, claim TLS
/// it did not use, or move the URLs a WSGI application builds.
///
/// - `forwarded_for`: the client address is appended to X-Forwarded-For; a trusted chain
///   and the new address become one `a, b, client` line (servers that read only the first
///   line would otherwise miss hops). IPv4-mapped IPv6 clients are written as IPv4.
/// - `forwarded_proto`: X-Forwarded-Proto is `https` or `http`; a trusted incoming value
///   is kept, because the front balancer saw the scheme the user really used.
/// - `forwarded_host`: X-Forwarded-Host is the Host, and X-Forwarded-Port the local port
///   (HAProxy's `dst_port` convention); both are left as they came when a trusted client
///   sent X-Forwarded-Host, because our local port says nothing about the front hop.
/// - `forwarded`: an element `for=...;proto=...[;host=...]` is appended, comma-joined
///   with a trusted incoming value.
pub fn apply_forwarding(headers: &mut impl Headers, cfg: &Http, facts: &ClientFacts) {
    let client = facts.client.to_canonical();
    let trusted = cfg.trusted_forwarders.iter().any(|n| n.contains(facts.peer));
    if !trusted {
        headers.remove_where(is_forwarding_header);
    }
    let proto = if facts.tls { "https" } else { "http" };

    // Writing into a Vec cannot fail: the `write!` results below are moot.
    if cfg.forwarded_for {
        headers.append_to_list("x-forwarded-for", |out| {
            let _ = write!(out, "{client}");
        });
    }
    if cfg.forwarded_proto && !headers.contains("x-forwarded-proto") {
        headers.append("x-forwarded-proto", proto.as_bytes());
    }
    if cfg.forwarded_host && !headers.contains("x-forwarded-host") {
        if let Some(host) = facts.host {
            headers.append("x-forwarded-host", host.as_bytes());
        }
        headers.set_with("x-forwarded-port", |out| {
            let _ = write!(out, "{}", facts.local.port());
        });
    }
    if cfg.forwarded {
        headers.append_to_list("forwarded", |out| {
            let _ = match client {
                IpAddr::V4(v4) => write!(out, "for={v4};proto={proto}"),
                IpAddr::V6(v6) => write!(out, "for=\"[{v6}]\";proto={proto}"),
            };
            if let Some(host) = facts.host {
                let mark = out.len();
                out.extend_from_slice(b";host=");
                push_token_or_quoted(out, host);
                // A Host that cannot sit in a header value is dropped rather than the element.
                if !valid_value(&out[mark..]) {
                    out.truncate(mark);
                }
            }
        });
    }
}

/// A header a WSGI server could read as forwarding information: `Forwarded`,
/// `X-Real-IP`, and the whole `X-Forwarded-*` family (`-For`, `-Proto`, `-Host`, `-Port`,
/// `-Prefix`, which oslo.middleware turns into SCRIPT_NAME, `-Ssl`, ...), in any case and
/// with `_` for `-`: WSGI servers fold `X_Forwarded_For` and `X-Forwarded-For` into the
/// same `HTTP_X_FORWARDED_FOR`, and every OpenStack API is WSGI.
pub fn is_forwarding_header(n: &[u8]) -> bool {
    // `name` equals `want` (lower case, with dashes) ignoring case and `_` for `-`.
    fn folded_eq(name: &[u8], want: &[u8]) -> bool {
        name.len() == want.len()
            && name.iter().zip(want).all(|(&a, &b)| a.to_ascii_lowercase() == b || (a == b'_' && b == b'-'))
    }
    const FAMILY: &[u8] = b"x-forwarded-";
    folded_eq(n, b"forwarded")
        || folded_eq(n, b"x-real-ip")
        || (n.len() > FAMILY.len() && folded_eq(&n[..FAMILY.len()], FAMILY))
}

/// RFC 7239 values are a token or a quoted-string; a host with a port (its colon) or
/// anything else outside tchar must be quoted.
fn push_token_or_quoted(out: &mut Vec<u8>, s: &str) {
    if !s.is_empty() && s.bytes().all(is_tchar) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IpNet;
    use crate::proxy::http_rules::testing::{all, both, names, Store};

    both!(
        untrusted_spoofing_removed,
        underscore_and_family_spellings_removed_from_the_untrusted,
        trust_follows_the_tcp_peer_not_the_proxy_header,
        untrusted_removed_even_when_not_adding,
        trusted_chain_appended_in_one_line,
        trusted_without_headers_gets_ours,
        ipv6_client,
        mapped_client_against_v4_range,
        forwarded_host_escaped,
        forwarding_flags_off,
    );

    fn cfg(trusted: &[&str]) -> Http {
        Http {
            forwarded_host: true,
            forwarded: true,
            trusted_forwarders: trusted.iter().map(|s| IpNet::parse(s).unwrap()).collect(),
            ..Http::default()
        }
    }

    fn facts(client: &str, tls: bool, host: Option<&'static str>) -> ClientFacts<'static> {
        let client = client.parse().unwrap();
        ClientFacts { client, peer: client, tls, host, local: "192.0.2.10:8004".parse().unwrap() }
    }

    fn untrusted_spoofing_removed<H: Store>() {
        let mut h = H::of(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-port", "443"),
            ("forwarded", "for=1.2.3.4"),
        ]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("203.0.113.9", false, Some("vip:8004")));
        assert_eq!(all(&h, "x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["vip:8004"]);
        assert_eq!(all(&h, "x-forwarded-port"), ["8004"]);
        assert_eq!(all(&h, "forwarded"), ["for=203.0.113.9;proto=http;host=\"vip:8004\""]);
    }

    fn underscore_and_family_spellings_removed_from_the_untrusted<H: Store>() {
        let spoofed = [
            ("x_forwarded_for", "6.6.6.6"),
            ("x-forwarded_proto", "https"),
            ("X_FORWARDED_HOST", "evil"),
            ("x-forwarded-prefix", "/evil"),
            ("x_forwarded_prefix", "/evil"),
            ("x-forwarded-ssl", "on"),
            ("x-real-ip", "6.6.6.6"),
            ("x_real_ip", "6.6.6.6"),
        ];
        let mut h = H::of(&spoofed);
        h.append("x-forwardedfor", b"kept: not a forwarding header");
        let c = Http { forwarded_for: false, forwarded_proto: false, ..Http::default() };
        apply_forwarding(&mut h, &c, &facts("203.0.113.9", false, None));
        assert_eq!(names(&h), ["x-forwardedfor"]);
        // A trusted front balancer's headers pass as they are.
        let mut h = H::of(&spoofed);
        apply_forwarding(
            &mut h,
            &Http { forwarded_for: false, forwarded_proto: false, ..cfg(&["10.0.0.0/8"]) },
            &facts("10.0.0.2", false, None),
        );
        for (name, value) in spoofed {
            assert_eq!(all(&h, &name.to_ascii_lowercase()), [value], "{name} from a trusted peer");
        }
    }

    fn trust_follows_the_tcp_peer_not_the_proxy_header<H: Store>() {
        let claimed = |peer: &str| ClientFacts { peer: peer.parse().unwrap(), ..facts("10.9.9.9", false, None) };
        // A PROXY header from an untrusted peer claims a trusted source: its XFF is not kept.
        let mut h = H::of(&[("x-forwarded-for", "6.6.6.6")]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &claimed("203.0.113.9"));
        assert_eq!(all(&h, "x-forwarded-for"), ["10.9.9.9"]);
        // A trusted front balancer relays a client from outside: the chain is kept.
        let mut h = H::of(&[("x-forwarded-for", "6.6.6.6")]);
        apply_forwarding(&mut h, &cfg(&["192.0.2.0/24"]), &claimed("192.0.2.5"));
        assert_eq!(all(&h, "x-forwarded-for"), ["6.6.6.6, 10.9.9.9"]);
    }

    fn untrusted_removed_even_when_not_adding<H: Store>() {
        let mut h = H::of(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https"), ("forwarded", "for=x")]);
        let c = Http { forwarded_for: false, forwarded_proto: false, ..Http::default() };
        apply_forwarding(&mut h, &c, &facts("203.0.113.9", false, None));
        assert!(names(&h).is_empty());
    }

    fn trusted_chain_appended_in_one_line<H: Store>() {
        let mut h = H::of(&[
            ("x-forwarded-for", "198.51.100.1, 198.51.100.2"),
            ("x-forwarded-for", "198.51.100.3"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "cloud.example.org"),
            ("forwarded", "for=198.51.100.1;proto=https"),
            ("forwarded", "for=198.51.100.3"),
        ]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("10.1.2.3", false, Some("vip")));
        assert_eq!(all(&h, "x-forwarded-for"), ["198.51.100.1, 198.51.100.2, 198.51.100.3, 10.1.2.3"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["cloud.example.org"]);
        // Our local port says nothing about the front hop.
        assert!(!h.contains("x-forwarded-port"));
        assert_eq!(
            all(&h, "forwarded"),
            ["for=198.51.100.1;proto=https, for=198.51.100.3, for=10.1.2.3;proto=http;host=vip"]
        );
    }

    fn trusted_without_headers_gets_ours<H: Store>() {
        let mut h = H::of(&[]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("10.1.2.3", true, Some("vip")));
        assert_eq!(all(&h, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(all(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(all(&h, "x-forwarded-host"), ["vip"]);
        assert_eq!(all(&h, "x-forwarded-port"), ["8004"]);
    }

    fn ipv6_client<H: Store>() {
        let mut h = H::of(&[]);
        apply_forwarding(&mut h, &cfg(&[]), &facts("2001:db8::1", true, Some("[2001:db8::10]:5000")));
        assert_eq!(all(&h, "x-forwarded-for"), ["2001:db8::1"]);
        assert_eq!(all(&h, "forwarded"), ["for=\"[2001:db8::1]\";proto=https;host=\"[2001:db8::10]:5000\""]);
    }

    fn mapped_client_against_v4_range<H: Store>() {
        let mut h = H::of(&[("x-forwarded-for", "198.51.100.1")]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("::ffff:10.1.2.3", false, None));
        assert_eq!(all(&h, "x-forwarded-for"), ["198.51.100.1, 10.1.2.3"]);
        assert_eq!(all(&h, "forwarded"), ["for=10.1.2.3;proto=http"]);

        let mut h = H::of(&[("x-forwarded-for", "198.51.100.1")]);
        apply_forwarding(&mut h, &cfg(&["10.0.0.0/8"]), &facts("::ffff:11.1.2.3", false, None));
        assert_eq!(all(&h, "x-forwarded-for"), ["11.1.2.3"]);
    }

    fn forwarded_host_escaped<H: Store>() {
        let mut h = H::of(&[]);
        apply_forwarding(&mut h, &cfg(&[]), &facts("192.0.2.1", false, Some("a\"b\\c")));
        assert_eq!(all(&h, "forwarded"), ["for=192.0.2.1;proto=http;host=\"a\\\"b\\\\c\""]);
    }

    fn forwarding_flags_off<H: Store>() {
        let mut h = H::of(&[]);
        let c = Http { forwarded_for: false, forwarded_proto: false, ..Http::default() };
        apply_forwarding(&mut h, &c, &facts("192.0.2.1", false, Some("vip")));
        assert!(names(&h).is_empty());
    }
}
