use std::time::Instant;
fn main() {
    use portico_identity::*;
    let h = password::Hasher::new(19_456, 2);
    let _ = h.hash("warmup password");
    let n = 10;
    let t = Instant::now();
    let mut phc = String::new();
    for _ in 0..n {
        phc = h.hash("correct horse battery staple");
    }
    println!("hash m=19456,t=2: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        assert!(h.verify("correct horse battery staple", &phc));
    }
    println!("verify: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        h.dummy_verify("x");
    }
    println!("dummy_verify (incl. first-use dummy hash): {:.1} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);

    let dir = std::env::temp_dir().join(format!("zz-timing-{}", secret::random_token()));
    let t = Instant::now();
    let key = jose::SigningKey::load_or_create(&dir.join("k.pem")).unwrap();
    println!("RSA-2048 keygen+write: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
    let t = Instant::now();
    let _k2 = jose::SigningKey::load_or_create(&dir.join("k.pem")).unwrap();
    println!("key load: {:.1} ms", t.elapsed().as_secs_f64() * 1000.0);
    std::fs::remove_dir_all(&dir).unwrap();
    let now = 1_750_000_000i64;
    let claims = serde_json::json!({"sub":"x","exp":now+300});
    let n = 100;
    let t = Instant::now();
    let mut tok = String::new();
    for _ in 0..n {
        tok = key.sign(&claims).unwrap();
    }
    println!("id_token sign RS256: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        key.verify(&tok, now).unwrap();
    }
    println!("id_token verify RS256: {:.3} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);

    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use p384::elliptic_curve::Generate as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::pkcs8::EncodePrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let rk = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).unwrap();
    let renc = EncodingKey::from_rsa_der(rk.to_pkcs1_der().unwrap().as_bytes());
    let ek = p384::SecretKey::generate();
    let eenc = EncodingKey::from_ec_der(ek.to_pkcs8_der().unwrap().as_bytes());
    let pt = ek.public_key().to_sec1_bytes();
    let set = serde_json::json!({"keys":[
        {"kty":"RSA","kid":"r","n":b64(&rk.n_bytes()),"e":b64(&rk.e_bytes())},
        {"kty":"EC","crv":"P-384","kid":"e","x":b64(&pt[1..49]),"y":b64(&pt[49..])}
    ]})
    .to_string();
    for (alg, kid, enc) in [(Algorithm::RS384, "r", &renc), (Algorithm::ES384, "e", &eenc)] {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        let c = serde_json::json!({"iss":"c","sub":"c","aud":"a","exp":now+200,"jti":"j"});
        let tok = jsonwebtoken::encode(&h, &c, enc).unwrap();
        let n = 200;
        let t = Instant::now();
        for _ in 0..n {
            jose::verify_client_assertion(&tok, &set, "c", &["a"], now).unwrap();
        }
        println!("verify_client_assertion {alg:?}: {:.3} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
    }
}
