//! Fetching a client's JWK Set from its registered `jwks_uri`.
//!
//! Why so defensive: the URL comes from a client registration, i.e. from
//! someone outside, and the server fetches it from inside the deployment's
//! network. Without care that is a server-side request forgery primitive:
//! point `jwks_uri` at `http://169.254.169.254/` (cloud metadata), at the
//! database, or at an admin port on localhost, and the server does the
//! request for you. So, unless the deployment explicitly allows private
//! targets (local development, tests):
//!
//! * only `https` is accepted;
//! * the host is resolved once, every address is checked against
//!   [`is_forbidden_ip`], and the connection is pinned to the checked
//!   addresses, so a DNS answer that changes between check and connect
//!   (DNS rebinding) cannot redirect us;
//! * redirects are not followed (a redirect is just another URL we would
//!   have to check), proxies from the environment are ignored (the proxy
//!   would do the connecting), and the whole exchange has a deadline and a
//!   body cap, so a slow or huge response cannot tie up the server.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use reqwest::Url;
use reqwest::redirect::Policy;

/// Whole-exchange deadline (resolution, connect, TLS, headers, body).
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWK Set body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Why a JWK Set could not be fetched. Messages name the category of
/// failure only; they never echo response bodies.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the JWK Set URL is not a valid absolute URL: {0}")]
    InvalidUrl(&'static str),
    #[error("the JWK Set URL must use https")]
    SchemeNotAllowed,
    #[error("the JWK Set URL points to a private, local or reserved network address")]
    ForbiddenAddress,
    #[error("the JWK Set host could not be resolved")]
    Resolve,
    #[error("fetching the JWK Set timed out")]
    Timeout,
    #[error("the JWK Set server answered with HTTP status {0}")]
    Status(u16),
    #[error("the JWK Set is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("the JWK Set is not valid UTF-8 text")]
    NotUtf8,
    #[error("fetching the JWK Set failed: {0}")]
    Transport(String),
}

#[derive(Clone, Copy)]
struct Limits {
    timeout: Duration,
    max_body: usize,
}

/// Fetch a client's JWK Set from `url` (https only, unless `allow_private` is true, then http allowed too). Unless `allow_private`,
/// resolve the host and refuse loopback, link-local, private (RFC 1918, ULA fc00::/7), unspecified, multicast, CGNAT 100.64/10 and
/// IPv4-mapped forms of those; connect only to the checked address (no DNS rebinding between check and connect: pin the resolved
/// address with reqwest's `resolve`). No redirects, 5 s timeout, 64 KiB body cap. Returns the body text.
///
/// Any 2xx status is accepted; the caller parses and checks the JSON
/// (see [`crate::jose::check_client_jwks`]).
pub async fn fetch_jwks(url: &str, allow_private: bool) -> Result<String, FetchError> {
    fetch_with(url, allow_private, Limits { timeout: TIMEOUT, max_body: MAX_BODY_BYTES }).await
}

async fn fetch_with(url: &str, allow_private: bool, limits: Limits) -> Result<String, FetchError> {
    let url = Url::parse(url).map_err(|_| FetchError::InvalidUrl("cannot be parsed"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err(FetchError::SchemeNotAllowed),
        _ => return Err(FetchError::InvalidUrl("scheme must be https")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FetchError::InvalidUrl("must not contain credentials"));
    }
    tokio::time::timeout(limits.timeout, fetch_checked(url, allow_private, limits))
        .await
        .map_err(|_| FetchError::Timeout)?
}

async fn fetch_checked(url: Url, allow_private: bool, limits: Limits) -> Result<String, FetchError> {
    let port = url.port_or_known_default().ok_or(FetchError::InvalidUrl("no port"))?;
    let mut builder = reqwest::Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .timeout(limits.timeout)
        .connect_timeout(limits.timeout)
        .user_agent(concat!("portico/", env!("CARGO_PKG_VERSION")));

    if !allow_private {
        builder = builder.https_only(true);
        match url.host() {
            None => return Err(FetchError::InvalidUrl("no host")),
            Some(url::Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip))?,
            Some(url::Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip))?,
            Some(url::Host::Domain(host)) => {
                let addrs: Vec<SocketAddr> =
                    tokio::net::lookup_host((host, port)).await.map_err(|_| FetchError::Resolve)?.collect();
                if addrs.is_empty() {
                    return Err(FetchError::Resolve);
                }
                // Refuse if *any* answer is forbidden: a hostile DNS server
                // could otherwise mix one public and one private address.
                for addr in &addrs {
                    check_ip(addr.ip())?;
                }
                builder = builder.resolve_to_addrs(host, &addrs);
            }
        }
    }

    let client = builder.build().map_err(|e| FetchError::Transport(e.without_url().to_string()))?;
    let mut response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
        .send()
        .await
        .map_err(transport)?;
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status(status.as_u16()));
    }
    if response.content_length().is_some_and(|len| len > limits.max_body as u64) {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport)? {
        if body.len() + chunk.len() > limits.max_body {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| FetchError::NotUtf8)
}

fn transport(e: reqwest::Error) -> FetchError {
    if e.is_timeout() { FetchError::Timeout } else { FetchError::Transport(e.without_url().to_string()) }
}

fn check_ip(ip: IpAddr) -> Result<(), FetchError> {
    if is_forbidden_ip(ip) { Err(FetchError::ForbiddenAddress) } else { Ok(()) }
}

/// Whether a JWK Set may not be fetched from `ip` (unless private targets
/// are allowed).
///
/// Beyond the brief's list (loopback, link-local, RFC 1918, ULA,
/// unspecified, multicast, CGNAT and their IPv4-mapped forms) this also
/// refuses other special-purpose ranges that never host a public service
/// (IANA special-purpose registries: "this network", broadcast,
/// documentation, benchmarking, reserved, IETF protocol assignments,
/// deprecated site-local) and IPv6 forms that embed an IPv4 address a
/// gateway might forward to (IPv4-compatible, NAT64, 6to4): the embedded
/// address is checked.
pub fn is_forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_forbidden_v4(v4),
        IpAddr::V6(v6) => is_forbidden_v6(v6),
    }
}

fn is_forbidden_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback() // 127/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16 (cloud metadata lives here)
        || ip.is_multicast() // 224/4
        || ip.is_broadcast() // 255.255.255.255
        || ip.is_documentation() // 192.0.2/24, 198.51.100/24, 203.0.113/24
        || a == 0 // "this network" 0/8
        || (a == 100 && (b & 0xc0) == 64) // CGNAT 100.64/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b & 0xfe) == 18) // benchmarking 198.18/15
        || a >= 240 // reserved 240/4
}

fn is_forbidden_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        // ::ffff:a.b.c.d
        return is_forbidden_v4(v4);
    }
    let seg = ip.segments();
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
        return true;
    }
    // IPv4-translated ::ffff:0:a.b.c.d (SIIT, RFC 2765).
    if seg[..4] == [0, 0, 0, 0] && seg[4] == 0xffff && seg[5] == 0 {
        let [a, b] = seg[6].to_be_bytes();
        let [c, d] = seg[7].to_be_bytes();
        return is_forbidden_v4(Ipv4Addr::new(a, b, c, d));
    }
    // IPv4-compatible ::a.b.c.d (deprecated, but some stacks still route it).
    if seg[..6].iter().all(|&s| s == 0) {
        return true;
    }
    let embedded_v4 = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    match seg[0] {
        s if (s & 0xfe00) == 0xfc00 => true,      // ULA fc00::/7
        s if (s & 0xffc0) == 0xfe80 => true,      // link-local fe80::/10
        s if (s & 0xffc0) == 0xfec0 => true,      // site-local fec0::/10 (deprecated)
        0x2001 if seg[1] == 0x0db8 => true,       // documentation 2001:db8::/32
        0x3fff if seg[1] < 0x1000 => true,        // documentation 3fff::/20
        0x0100 if seg[1..4] == [0, 0, 0] => true, // discard-only 100::/64
        // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48.
        0x0064 if seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] => is_forbidden_v4(embedded_v4(seg[6], seg[7])),
        0x0064 if seg[1] == 0xff9b && seg[2] == 1 => true,
        // 6to4 2002:a.b.c.d::/48.
        0x2002 => is_forbidden_v4(embedded_v4(seg[1], seg[2])),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forbidden_v4() {
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.255.255.255",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "192.168.255.255",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.8",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.255",
        ] {
            assert!(is_forbidden_ip(ip(s)), "{s} should be forbidden");
        }
    }

    #[test]
    fn allowed_v4() {
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "9.255.255.255",
            "11.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.167.255.255",
            "192.169.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "192.0.1.1",
            "93.184.216.34",
        ] {
            assert!(!is_forbidden_ip(ip(s)), "{s} should be allowed");
        }
    }

    #[test]
    fn forbidden_v6() {
        for s in [
            "::",
            "::1",
            "fc00::1",
            "fd12:3456:789a::1",
            "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            // IPv4-mapped forms of forbidden v4.
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:100.64.0.1",
            "::ffff:192.168.1.1",
            "::ffff:0.0.0.0",
            // IPv4-compatible (deprecated) forms.
            "::127.0.0.1",
            "::8.8.8.8",
            // NAT64 and 6to4 embedding forbidden v4.
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "::ffff:0:7f00:1",
            "::ffff:0:a00:1",
        ] {
            assert!(is_forbidden_ip(ip(s)), "{s} should be forbidden");
        }
    }

    #[test]
    fn allowed_v6() {
        for s in [
            "2606:4700:4700::1111",
            "2001:4860:4860::8888",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:0:808:808",
            "fe00::1",
            "fbff::1",
            "2001:db9::1",
        ] {
            assert!(!is_forbidden_ip(ip(s)), "{s} should be allowed");
        }
    }

    proptest! {
        /// Whatever the v4 verdict, its IPv4-mapped v6 form gets the same one.
        #[test]
        fn mapped_matches_v4(bits in any::<u32>()) {
            let v4 = Ipv4Addr::from(bits);
            prop_assert_eq!(
                is_forbidden_ip(IpAddr::V4(v4)),
                is_forbidden_ip(IpAddr::V6(v4.to_ipv6_mapped()))
            );
        }

        #[test]
        fn rfc1918_always_forbidden(b in any::<u8>(), c in any::<u8>(), d in any::<u8>()) {
            prop_assert!(is_forbidden_ip(IpAddr::V4(Ipv4Addr::new(10, b, c, d))));
            prop_assert!(is_forbidden_ip(IpAddr::V4(Ipv4Addr::new(172, 16 | (b & 0x0f), c, d))));
            prop_assert!(is_forbidden_ip(IpAddr::V4(Ipv4Addr::new(192, 168, c, d))));
            prop_assert!(is_forbidden_ip(IpAddr::V4(Ipv4Addr::new(100, 64 | (b & 0x3f), c, d))));
        }
    }

    /// A one-shot HTTP/1.1 server on 127.0.0.1 answering every connection
    /// with `response`; returns its base URL (`http://127.0.0.1:PORT`).
    async fn serve(response: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = sock.write_all(&response).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        format!("http://{addr}")
    }

    fn http_response(status: &str, headers: &str, body: &str) -> Vec<u8> {
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n{body}", body.len())
            .into_bytes()
    }

    const JWKS: &str = r#"{"keys":[]}"#;

    #[tokio::test]
    async fn local_fetch_refused_unless_private_allowed() {
        let base = serve(http_response("200 OK", "Content-Type: application/json\r\n", JWKS)).await;
        let url = format!("{base}/jwks.json");

        // http is refused outright when private targets are not allowed...
        assert!(matches!(fetch_jwks(&url, false).await, Err(FetchError::SchemeNotAllowed)));
        // ...and https to the loopback address is refused before connecting.
        let https = url.replacen("http://", "https://", 1);
        assert!(matches!(fetch_jwks(&https, false).await, Err(FetchError::ForbiddenAddress)));
        // A name that resolves to loopback is refused too.
        let by_name = https.replacen("127.0.0.1", "localhost", 1);
        assert!(matches!(fetch_jwks(&by_name, false).await, Err(FetchError::ForbiddenAddress)));
        let mapped = https.replacen("127.0.0.1", "[::ffff:127.0.0.1]", 1);
        assert!(matches!(fetch_jwks(&mapped, false).await, Err(FetchError::ForbiddenAddress)));

        // With private targets allowed, the same URL works.
        assert_eq!(fetch_jwks(&url, true).await.unwrap(), JWKS);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let target = serve(http_response("200 OK", "", JWKS)).await;
        let base = serve(http_response("302 Found", &format!("Location: {target}/jwks.json\r\n"), "")).await;
        assert!(matches!(fetch_jwks(&format!("{base}/jwks.json"), true).await, Err(FetchError::Status(302))));
    }

    #[tokio::test]
    async fn error_status_and_body_cap() {
        let base = serve(http_response("404 Not Found", "", "nope")).await;
        assert!(matches!(fetch_jwks(&base, true).await, Err(FetchError::Status(404))));

        // Declared too large.
        let big = "x".repeat(MAX_BODY_BYTES + 1);
        let base = serve(http_response("200 OK", "", &big)).await;
        assert!(matches!(fetch_jwks(&base, true).await, Err(FetchError::TooLarge)));

        // Too large without a Content-Length (chunked): caught while streaming.
        let mut chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for _ in 0..20 {
            chunked.extend_from_slice(format!("{:x}\r\n{}\r\n", 4096, "y".repeat(4096)).as_bytes());
        }
        chunked.extend_from_slice(b"0\r\n\r\n");
        let base = serve(chunked).await;
        assert!(matches!(fetch_jwks(&base, true).await, Err(FetchError::TooLarge)));

        // Exactly at the cap is fine.
        let max = "z".repeat(MAX_BODY_BYTES);
        let base = serve(http_response("200 OK", "", &max)).await;
        assert_eq!(fetch_jwks(&base, true).await.unwrap().len(), MAX_BODY_BYTES);

        let base = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n\xff\xfe".to_vec()).await;
        assert!(matches!(fetch_jwks(&base, true).await, Err(FetchError::NotUtf8)));
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        // Accepts and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let limits = Limits { timeout: Duration::from_millis(300), max_body: MAX_BODY_BYTES };
        let started = std::time::Instant::now();
        let result = fetch_with(&format!("http://{addr}/"), true, limits).await;
        assert!(matches!(result, Err(FetchError::Timeout)), "{result:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn bad_urls() {
        for (url, private) in [
            ("", true),
            ("not a url", true),
            ("/relative/jwks.json", true),
            ("ftp://example.org/jwks.json", true),
            ("file:///etc/passwd", true),
            ("https://user:pass@example.org/jwks.json", false),
            ("https://0.0.0.0/jwks.json", false),
            ("https://[::1]/jwks.json", false),
            ("https://169.254.169.254/latest/meta-data", false),
            ("https://10.0.0.1/jwks.json", false),
            ("https://2130706433/jwks.json", false), // 127.0.0.1 as a decimal integer
            ("https://0x7f.1/jwks.json", false),
            ("http://example.org/jwks.json", false),
        ] {
            let result = fetch_jwks(url, private).await;
            assert!(
                matches!(
                    result,
                    Err(FetchError::InvalidUrl(_) | FetchError::SchemeNotAllowed | FetchError::ForbiddenAddress)
                ),
                "{url}: {result:?}"
            );
        }
    }
}
