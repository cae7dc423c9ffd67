//! XML-DSig verification of a signed CAP message: the enveloped `<Signature>` that CAP 1.2
//! allows at the end of `<alert>` (as FEMA IPAWS and Environment Canada sign theirs). Pure:
//! bytes and certificates in, a verdict out.
//!
//! What is checked, per W3C XML Signature 1.1 (core validation): the `<Reference URI="">`
//! digest over the whole alert with the signature taken out (the enveloped-signature
//! transform, then Canonical XML 1.0 or Exclusive XML Canonicalization 1.0), and the
//! `<SignatureValue>` over the canonical `<SignedInfo>`, with the key of a certificate in
//! `<KeyInfo>` or of one the caller gives. Who may sign is the caller's decision
//! ([`crate::bulletin::vouch`] pins certificates per sender); this module says which
//! certificate's key made the signature.
//!
//! Not supported, and reported as such ([`DsigError::Unsupported`]): SHA-1 (broken), any
//! other reference than the whole document, XPath and other transforms, comments kept in
//! canonical form, and DTDs (refused as by the CAP parser).

use std::collections::BTreeMap;

use base64::Engine;
use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};
use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm};
use sha2::Digest;

/// The XML-DSig namespace.
pub const NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const C14N: &str = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";
/// Deeper than any CAP document; bounds the recursion of canonicalization.
const MAX_DEPTH: usize = 64;
/// More namespace declarations than any CAP document has; bounds the scopes copied while
/// canonicalizing.
const MAX_NAMESPACES: usize = 64;

/// What the signatures of a document say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// No `<Signature>` in the XML-DSig namespace under the root element.
    Unsigned,
    /// Every signature verified. The certificate (DER) whose key made each one.
    Valid { signers: Vec<Vec<u8>> },
    /// A signature is there and does not verify, or cannot be checked.
    Invalid(DsigError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DsigError {
    #[error("the XML cannot be read: {0}")]
    Xml(String),
    #[error("the signature is malformed: {0}")]
    Malformed(String),
    #[error("unsupported {what}: {uri}")]
    Unsupported { what: &'static str, uri: String },
    #[error("the digest does not match: the alert was changed after it was signed")]
    Digest,
    #[error("no certificate's key verifies the signature value ({0} tried)")]
    BadSignature(usize),
    #[error("no certificate to verify with: none in <KeyInfo>, none configured")]
    NoCertificate,
}

/// Verifies every signature of `xml` (a CAP document, or an `<alert>` cut out of a feed),
/// trying the certificates in each `<KeyInfo>` and then `certificates` (DER).
pub fn verify(xml: &[u8], certificates: &[Vec<u8>]) -> Signature {
    let doc = match parse(xml) {
        Ok(d) => d,
        Err(e) => return Signature::Invalid(e),
    };
    let root_scope = Scope::default().enter(&doc.root);
    let signatures: Vec<&Element> = doc
        .root
        .children
        .iter()
        .filter_map(|n| match n {
            Node::Element(e) if is(&root_scope, e, NS, "Signature") => Some(e),
            _ => None,
        })
        .collect();
    if signatures.is_empty() {
        return Signature::Unsigned;
    }
    let mut signers = Vec::new();
    for sig in signatures {
        match verify_one(&doc, &root_scope, sig, certificates) {
            Ok(cert) => signers.push(cert),
            Err(e) => return Signature::Invalid(e),
        }
    }
    Signature::Valid { signers }
}

/// The X.509 certificates (DER) of a PEM text, each checked to parse; an error if there is
/// none, for a configured signer's certificate file.
pub fn certificates_from_pem(pem: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use rustls_pki_types::pem::PemObject;
    let mut out = Vec::new();
    for (n, c) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let c = c.map_err(|e| format!("certificate {}: {e}", n + 1))?;
        webpki::EndEntityCert::try_from(&c).map_err(|e| format!("certificate {}: not X.509: {e}", n + 1))?;
        out.push(c.to_vec());
    }
    if out.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(out)
}

fn verify_one(
    doc: &Document,
    root_scope: &Scope,
    sig: &Element,
    extra: &[Vec<u8>],
) -> Result<Vec<u8>, DsigError> {
    let scope = root_scope.enter(sig);
    let signed_info = child(&scope, sig, "SignedInfo")?;
    let si_scope = scope.enter(signed_info);
    let c14n = method(
        &si_scope,
        child(&si_scope, signed_info, "CanonicalizationMethod")?,
    )?;
    let sig_alg = algorithm(child(&si_scope, signed_info, "SignatureMethod")?)?;
    let references = children(&si_scope, signed_info, "Reference");
    let [reference] = references.as_slice() else {
        return Err(DsigError::Malformed(format!(
            "{} <Reference>s; one, over the whole alert, is supported",
            references.len()
        )));
    };
    match reference.attr("URI") {
        Some("") => {}
        Some(uri) => {
            return Err(DsigError::Unsupported {
                what: "reference (only URI=\"\", the whole alert)",
                uri: uri.to_owned(),
            });
        }
        None => {
            return Err(DsigError::Unsupported {
                what: "reference (only URI=\"\", the whole alert)",
                uri: "(none)".into(),
            });
        }
    }
    let ref_scope = si_scope.enter(reference);
    let mut enveloped = false;
    let mut octets = C14nMethod::Inclusive;
    if let Ok(transforms) = child(&ref_scope, reference, "Transforms") {
        let t_scope = ref_scope.enter(transforms);
        for t in children(&t_scope, transforms, "Transform") {
            match algorithm(t)? {
                ENVELOPED => enveloped = true,
                _ => octets = method(&t_scope, t)?,
            }
        }
    }
    if !enveloped {
        return Err(DsigError::Malformed(
            "the reference covers the whole alert without the enveloped-signature transform, so it would cover its own signature".into(),
        ));
    }
    let digest_alg = algorithm(child(&ref_scope, reference, "DigestMethod")?)?;
    let expected = base64(
        &child(&ref_scope, reference, "DigestValue")?.text(),
        "DigestValue",
    )?;
    let canonical = canonical_document(doc, sig, &octets)?;
    let actual = match digest_alg {
        "http://www.w3.org/2001/04/xmlenc#sha256" => sha2::Sha256::digest(&canonical).to_vec(),
        "http://www.w3.org/2001/04/xmldsig-more#sha384" => sha2::Sha384::digest(&canonical).to_vec(),
        "http://www.w3.org/2001/04/xmlenc#sha512" => sha2::Sha512::digest(&canonical).to_vec(),
        other => {
            return Err(DsigError::Unsupported {
                what: "digest algorithm",
                uri: other.to_owned(),
            });
        }
    };
    if actual != expected {
        return Err(DsigError::Digest);
    }
    let value = base64(&child(&scope, sig, "SignatureValue")?.text(), "SignatureValue")?;
    let signed = canonical_subset(signed_info, &scope, &c14n)?;
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    if let Ok(key_info) = child(&scope, sig, "KeyInfo") {
        let k_scope = scope.enter(key_info);
        for data in children(&k_scope, key_info, "X509Data") {
            let d_scope = k_scope.enter(data);
            for c in children(&d_scope, data, "X509Certificate") {
                candidates.push(base64(&c.text(), "X509Certificate")?);
            }
        }
    }
    candidates.extend(extra.iter().cloned());
    if candidates.is_empty() {
        return Err(DsigError::NoCertificate);
    }
    let algs = verifiers(sig_alg)?;
    let value = if sig_alg.contains("ecdsa") {
        ecdsa_der(&value)
            .ok_or_else(|| DsigError::Malformed("an ECDSA SignatureValue is r || s of equal halves".into()))?
    } else {
        value
    };
    for cert in &candidates {
        let der = CertificateDer::from(cert.as_slice());
        let Ok(ee) = webpki::EndEntityCert::try_from(&der) else {
            continue;
        };
        if algs
            .iter()
            .any(|alg| ee.verify_signature(*alg, &signed, &value).is_ok())
        {
            return Ok(cert.clone());
        }
    }
    Err(DsigError::BadSignature(candidates.len()))
}

fn verifiers(uri: &str) -> Result<Vec<&'static dyn SignatureVerificationAlgorithm>, DsigError> {
    use webpki::aws_lc_rs as a;
    Ok(match uri {
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256" => vec![a::RSA_PKCS1_2048_8192_SHA256],
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha384" => vec![a::RSA_PKCS1_2048_8192_SHA384],
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha512" => vec![a::RSA_PKCS1_2048_8192_SHA512],
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256" => {
            vec![a::ECDSA_P256_SHA256, a::ECDSA_P384_SHA256, a::ECDSA_P521_SHA256]
        }
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384" => {
            vec![a::ECDSA_P256_SHA384, a::ECDSA_P384_SHA384, a::ECDSA_P521_SHA384]
        }
        "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha512" => {
            vec![a::ECDSA_P256_SHA512, a::ECDSA_P384_SHA512, a::ECDSA_P521_SHA512]
        }
        other => {
            return Err(DsigError::Unsupported {
                what: "signature algorithm",
                uri: other.to_owned(),
            });
        }
    })
}

/// XML-DSig writes an ECDSA signature as r || s; webpki takes the DER `Ecdsa-Sig-Value`.
fn ecdsa_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || !raw.len().is_multiple_of(2) {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let integer = |x: &[u8]| {
        let first = x.iter().position(|b| *b != 0).unwrap_or(x.len() - 1);
        let x = &x[first..];
        let mut out = vec![0x02];
        let pad = x[0] & 0x80 != 0;
        push_len(&mut out, x.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(x);
        out
    };
    let body = [integer(r), integer(s)].concat();
    let mut out = vec![0x30];
    push_len(&mut out, body.len());
    out.extend(body);
    Some(out)
}

fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend([0x81, len as u8]);
    } else {
        out.extend([0x82, (len >> 8) as u8, len as u8]);
    }
}

fn base64(text: &str, element: &str) -> Result<Vec<u8>, DsigError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| DsigError::Malformed(format!("<{element}> is not base64: {e}")))
}

fn algorithm(e: &Element) -> Result<&str, DsigError> {
    e.attr("Algorithm")
        .ok_or_else(|| DsigError::Malformed(format!("<{}> has no Algorithm", e.name)))
}

fn method(scope: &Scope, e: &Element) -> Result<C14nMethod, DsigError> {
    match algorithm(e)? {
        C14N => Ok(C14nMethod::Inclusive),
        EXC_C14N => {
            let e_scope = scope.enter(e);
            let prefixes = e
                .children
                .iter()
                .filter_map(|n| match n {
                    Node::Element(c) if is(&e_scope, c, EXC_C14N, "InclusiveNamespaces") => {
                        c.attr("PrefixList")
                    }
                    _ => None,
                })
                .flat_map(str::split_ascii_whitespace)
                .map(|p| {
                    if p == "#default" {
                        String::new()
                    } else {
                        p.to_owned()
                    }
                })
                .collect();
            Ok(C14nMethod::Exclusive(prefixes))
        }
        other => Err(DsigError::Unsupported {
            what: "canonicalization or transform",
            uri: other.to_owned(),
        }),
    }
}

/// Whether `e`, a child of an element whose inner scope is `scope`, is `ns`:`local`.
fn is(scope: &Scope, e: &Element, ns: &str, local: &str) -> bool {
    let (prefix, name) = e.name.split_once(':').unwrap_or(("", e.name.as_str()));
    let uri = e
        .namespaces
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, u)| u.as_str())
        .or_else(|| scope.namespaces.get(prefix).map(String::as_str));
    name == local && uri == Some(ns)
}

/// The children `local` in the XML-DSig namespace of `parent`, whose inner scope (its own
/// declarations included) is `scope`.
fn children<'a>(scope: &Scope, parent: &'a Element, local: &str) -> Vec<&'a Element> {
    parent
        .children
        .iter()
        .filter_map(|n| match n {
            Node::Element(e) if is(scope, e, NS, local) => Some(e),
            _ => None,
        })
        .collect()
}

/// The first of [`children`].
fn child<'a>(scope: &Scope, parent: &'a Element, local: &str) -> Result<&'a Element, DsigError> {
    children(scope, parent, local)
        .into_iter()
        .next()
        .ok_or_else(|| DsigError::Malformed(format!("<{}> has no <{local}>", parent.name)))
}

// ---- a small DOM, with namespaces as written ----

#[derive(Debug)]
struct Document {
    before: Vec<Node>,
    root: Element,
    after: Vec<Node>,
}

#[derive(Debug)]
enum Node {
    Element(Element),
    Text(String),
    Pi(String),
}

#[derive(Debug)]
struct Element {
    /// The qualified name as written (`ds:Signature`, `alert`).
    name: String,
    /// Namespace declarations: prefix ("" for the default) and URI ("" undeclares).
    namespaces: Vec<(String, String)>,
    /// Other attributes: qualified name and normalized value.
    attributes: Vec<(String, String)>,
    children: Vec<Node>,
}

impl Element {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn prefix(&self) -> &str {
        self.name.split_once(':').map_or("", |(p, _)| p)
    }

    fn text(&self) -> String {
        self.children
            .iter()
            .filter_map(|n| match n {
                Node::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// The namespaces in scope at an element, and the `xml:` attributes it inherits.
#[derive(Debug, Clone, Default)]
struct Scope {
    namespaces: BTreeMap<String, String>,
    xml_attributes: BTreeMap<String, String>,
}

impl Scope {
    /// The scope inside `e`.
    fn enter(&self, e: &Element) -> Scope {
        let mut inner = self.clone();
        for (p, uri) in &e.namespaces {
            inner.namespaces.insert(p.clone(), uri.clone());
        }
        for (n, v) in &e.attributes {
            if n.starts_with("xml:") {
                inner.xml_attributes.insert(n.clone(), v.clone());
            }
        }
        inner
    }

    fn uri(&self, prefix: &str) -> Result<String, DsigError> {
        match prefix {
            "xml" => Ok(XML_NS.into()),
            "" => Ok(self.namespaces.get("").cloned().unwrap_or_default()),
            p => self
                .namespaces
                .get(p)
                .filter(|u| !u.is_empty())
                .cloned()
                .ok_or_else(|| DsigError::Xml(format!("prefix {p:?} is not declared"))),
        }
    }
}

fn parse(xml: &[u8]) -> Result<Document, DsigError> {
    let mut reader = Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut stack: Vec<Element> = Vec::new();
    let (mut before, mut after, mut root) = (Vec::new(), Vec::new(), None);
    let mut declarations = 0;
    let err = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| {
        DsigError::Xml(format!("at byte {}: {e}", reader.buffer_position()))
    };
    loop {
        let event = reader.read_event_into(&mut buf).map_err(|e| err(&reader, &e))?;
        match event {
            Event::DocType(_) => return Err(DsigError::Xml("a DTD is not allowed".into())),
            Event::Start(_) | Event::Empty(_) if declarations > MAX_NAMESPACES => {
                return Err(DsigError::Xml(format!(
                    "more than {MAX_NAMESPACES} namespace declarations"
                )));
            }
            Event::Start(e) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(DsigError::Xml(format!("nested deeper than {MAX_DEPTH} elements")));
                }
                if root.is_some() {
                    return Err(DsigError::Xml("a second root element".into()));
                }
                let el = element(&e)?;
                declarations += el.namespaces.len();
                stack.push(el);
            }
            Event::Empty(e) => {
                let el = element(&e)?;
                declarations += el.namespaces.len();
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None if root.is_none() => root = Some(el),
                    None => return Err(DsigError::Xml("a second root element".into())),
                }
            }
            Event::End(_) => {
                let Some(el) = stack.pop() else {
                    return Err(DsigError::Xml("an end tag without a start".into()));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(Node::Element(el)),
                    None => root = Some(el),
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| err(&reader, &e))?;
                push_text(&mut stack, &normalize_eol(&text))?;
            }
            Event::CData(t) => {
                let text = String::from_utf8(t.into_inner().into_owned())
                    .map_err(|e| DsigError::Xml(format!("CDATA: {e}")))?;
                push_text(&mut stack, &normalize_eol(&text))?;
            }
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| err(&reader, &e))?;
                let text = crate::cap::entity(&name).map_err(|e| DsigError::Xml(e.to_string()))?;
                push_text(&mut stack, &text)?;
            }
            Event::PI(p) => {
                let target = String::from_utf8_lossy(p.target()).into_owned();
                let content = String::from_utf8_lossy(p.content()).trim_start().to_owned();
                let pi = if content.is_empty() {
                    format!("<?{target}?>")
                } else {
                    format!("<?{target} {}?>", normalize_eol(&content))
                };
                match (stack.last_mut(), &root) {
                    (Some(parent), _) => parent.children.push(Node::Pi(pi)),
                    (None, None) => before.push(Node::Pi(pi)),
                    (None, Some(_)) => after.push(Node::Pi(pi)),
                }
            }
            Event::Comment(_) | Event::Decl(_) => {}
            Event::Eof => break,
        }
        buf.clear();
    }
    if !stack.is_empty() {
        return Err(DsigError::Xml("the document ends inside an element".into()));
    }
    let root = root.ok_or_else(|| DsigError::Xml("no root element".into()))?;
    Ok(Document { before, root, after })
}

fn push_text(stack: &mut [Element], text: &str) -> Result<(), DsigError> {
    match stack.last_mut() {
        Some(parent) => {
            if let Some(Node::Text(t)) = parent.children.last_mut() {
                t.push_str(text);
            } else {
                parent.children.push(Node::Text(text.to_owned()));
            }
            Ok(())
        }
        // Whitespace outside the root element is not part of the document.
        None if text.chars().all(|c| c.is_ascii_whitespace()) => Ok(()),
        None => Err(DsigError::Xml("text outside the root element".into())),
    }
}

fn normalize_eol(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fn element(e: &BytesStart<'_>) -> Result<Element, DsigError> {
    let name = std::str::from_utf8(e.name().as_ref())
        .map_err(|err| DsigError::Xml(err.to_string()))?
        .to_owned();
    let mut el = Element {
        name,
        namespaces: Vec::new(),
        attributes: Vec::new(),
        children: Vec::new(),
    };
    for a in e.attributes() {
        let a = a.map_err(|err| DsigError::Xml(err.to_string()))?;
        let key = std::str::from_utf8(a.key.as_ref())
            .map_err(|err| DsigError::Xml(err.to_string()))?
            .to_owned();
        let raw = std::str::from_utf8(&a.value).map_err(|err| DsigError::Xml(err.to_string()))?;
        let value = attribute_value(raw)?;
        if key == "xmlns" {
            el.namespaces.push((String::new(), value));
        } else if let Some(p) = key.strip_prefix("xmlns:") {
            el.namespaces.push((p.to_owned(), value));
        } else {
            el.attributes.push((key, value));
        }
    }
    Ok(el)
}

/// Attribute-value normalization (XML 1.0 §3.3.3, every attribute CDATA without a DTD):
/// line ends and white space characters written literally become spaces, references are
/// replaced (a `&#10;` stays a line feed).
fn attribute_value(raw: &str) -> Result<String, DsigError> {
    let raw = normalize_eol(raw);
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(i) = rest.find(['&', '\t', '\n']) {
        out.push_str(&rest[..i]);
        if rest.as_bytes()[i] == b'&' {
            let end = rest[i..]
                .find(';')
                .ok_or_else(|| DsigError::Xml("an unterminated reference in an attribute".into()))?;
            out.push_str(
                &crate::cap::entity(&rest[i + 1..i + end]).map_err(|e| DsigError::Xml(e.to_string()))?,
            );
            rest = &rest[i + end + 1..];
        } else {
            out.push(' ');
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

// ---- canonicalization ----

#[derive(Debug, Clone, PartialEq)]
enum C14nMethod {
    /// Canonical XML 1.0, without comments.
    Inclusive,
    /// Exclusive XML Canonicalization 1.0, without comments, with its InclusiveNamespaces
    /// prefix list ("" for `#default`).
    Exclusive(Vec<String>),
}

/// The whole document without `omit` (the enveloped signature), in canonical form.
fn canonical_document(doc: &Document, omit: &Element, method: &C14nMethod) -> Result<Vec<u8>, DsigError> {
    let mut out = String::new();
    for n in &doc.before {
        if let Node::Pi(pi) = n {
            out.push_str(pi);
            out.push('\n');
        }
    }
    let c = Canonicalizer {
        method,
        omit: Some(omit),
    };
    c.element(&doc.root, &Scope::default(), &BTreeMap::new(), false, &mut out, 0)?;
    for n in &doc.after {
        if let Node::Pi(pi) = n {
            out.push('\n');
            out.push_str(pi);
        }
    }
    Ok(out.into_bytes())
}

/// `apex` and what is under it, in canonical form, as the apex of a document subset in
/// `scope` (its ancestors' namespaces and `xml:` attributes).
fn canonical_subset(apex: &Element, scope: &Scope, method: &C14nMethod) -> Result<Vec<u8>, DsigError> {
    let mut out = String::new();
    let c = Canonicalizer { method, omit: None };
    c.element(apex, scope, &BTreeMap::new(), true, &mut out, 0)?;
    Ok(out.into_bytes())
}

struct Canonicalizer<'a> {
    method: &'a C14nMethod,
    omit: Option<&'a Element>,
}

impl Canonicalizer<'_> {
    /// Writes `e` given the scope of its parent and the namespaces its output ancestors
    /// rendered. `apex`: the first element of a document subset (it inherits the
    /// ancestors' `xml:` attributes in Canonical XML 1.0).
    fn element(
        &self,
        e: &Element,
        parent: &Scope,
        rendered: &BTreeMap<String, String>,
        apex: bool,
        out: &mut String,
        depth: usize,
    ) -> Result<(), DsigError> {
        if depth > MAX_DEPTH {
            return Err(DsigError::Xml(format!("nested deeper than {MAX_DEPTH} elements")));
        }
        let scope = parent.enter(e);
        // Which prefixes to consider for a namespace declaration here.
        let candidates: Vec<String> = match self.method {
            C14nMethod::Inclusive => scope.namespaces.keys().cloned().chain([String::new()]).collect(),
            C14nMethod::Exclusive(inclusive) => {
                let mut used = vec![e.prefix().to_owned()];
                used.extend(
                    e.attributes
                        .iter()
                        .filter_map(|(n, _)| n.split_once(':').map(|(p, _)| p.to_owned())),
                );
                used.extend(
                    inclusive
                        .iter()
                        .filter(|p| p.is_empty() || scope.namespaces.contains_key(*p))
                        .cloned(),
                );
                used
            }
        };
        let mut decls: BTreeMap<String, String> = BTreeMap::new();
        for p in candidates {
            if p == "xml" || decls.contains_key(&p) {
                continue;
            }
            let uri = scope.namespaces.get(&p).cloned().unwrap_or_default();
            if p.is_empty() {
                let before = rendered.get("").map(String::as_str).unwrap_or("");
                if uri != before {
                    decls.insert(p, uri);
                }
            } else if uri.is_empty() {
                // An undeclared prefix in XML 1.0 is an error caught by `uri` below.
                continue;
            } else if rendered.get(&p) != Some(&uri) {
                decls.insert(p, uri);
            }
        }
        // Attributes, sorted by namespace URI, then local name.
        let mut attrs: Vec<(String, String, &str, &str)> = Vec::new();
        for (n, v) in &e.attributes {
            let (ns, local) = match n.split_once(':') {
                Some((p, l)) => (scope.uri(p)?, l.to_owned()),
                None => (String::new(), n.clone()),
            };
            attrs.push((ns, local, n.as_str(), v.as_str()));
        }
        if apex && *self.method == C14nMethod::Inclusive {
            for (n, v) in &parent.xml_attributes {
                if e.attr(n).is_none() {
                    attrs.push((
                        XML_NS.into(),
                        n["xml:".len()..].to_owned(),
                        n.as_str(),
                        v.as_str(),
                    ));
                }
            }
        }
        attrs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        scope.uri(e.prefix())?;
        out.push('<');
        out.push_str(&e.name);
        for (p, uri) in &decls {
            out.push_str(if p.is_empty() { " xmlns" } else { " xmlns:" });
            out.push_str(p);
            out.push_str("=\"");
            escape_attr(uri, out);
            out.push('"');
        }
        for (_, _, name, value) in &attrs {
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            escape_attr(value, out);
            out.push('"');
        }
        out.push('>');
        let mut inner_rendered = rendered.clone();
        inner_rendered.extend(decls);
        for n in &e.children {
            match n {
                Node::Element(c) if self.omit.is_some_and(|o| std::ptr::eq(o, c)) => {}
                Node::Element(c) => self.element(c, &scope, &inner_rendered, false, out, depth + 1)?,
                Node::Text(t) => escape_text(t, out),
                Node::Pi(pi) => out.push_str(pi),
            }
        }
        out.push_str("</");
        out.push_str(&e.name);
        out.push('>');
        Ok(())
    }
}

fn escape_text(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

fn escape_attr(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/fixtures/cap/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn cert(name: &str) -> Vec<u8> {
        let path = format!("{}/fixtures/cap/signed/{name}", env!("CARGO_MANIFEST_DIR"));
        CertificateDer::from_pem_file(path).unwrap().to_vec()
    }

    fn replace(doc: &[u8], from: &str, to: &str) -> Vec<u8> {
        let s = String::from_utf8(doc.to_vec()).unwrap();
        assert!(s.contains(from), "{from:?} is not in the document");
        s.replacen(from, to, 1).into_bytes()
    }

    fn signers(doc: &[u8], certs: &[Vec<u8>]) -> Vec<Vec<u8>> {
        match verify(doc, certs) {
            Signature::Valid { signers } => signers,
            other => panic!("expected a valid signature: {other:?}"),
        }
    }

    #[test]
    fn real_ipaws_signatures_verify_with_the_certificate_they_carry() {
        // FEMA IPAWS, 2019: enveloped signature, Exclusive C14N of <SignedInfo>, the
        // reference canonicalized by default (Canonical XML 1.0), RSA-SHA256.
        for name in [
            "ipaws-cancel-signed.xml",
            "ipaws-local-area-emergency-polygon-signed.xml",
        ] {
            let doc = fixture(name);
            let signers = signers(&doc, &[]);
            assert_eq!(signers.len(), 1, "{name}");
            // The signer is the certificate in <KeyInfo> (FEMA's IPAWSOPEN_200302).
            let text = String::from_utf8_lossy(&doc);
            let b64 = text
                .split("X509Certificate>")
                .nth(1)
                .unwrap()
                .split("</")
                .next()
                .unwrap();
            assert_eq!(signers[0], base64(b64, "test").unwrap(), "{name}");
        }
    }

    #[test]
    fn documents_signed_by_xmlsec1_verify_and_name_their_signer() {
        // RSA-SHA256, Exclusive C14N, the certificate in <KeyInfo>.
        let rsa = fixture("signed/lang-son-rsa-sha256-exc-c14n.xml");
        assert_eq!(signers(&rsa, &[]), vec![cert("kttv-test-rsa.pem")]);
        // ECDSA P-256, Canonical XML 1.0, a default-namespace <Signature>, no <KeyInfo>:
        // only the configured certificate verifies it.
        let ec = fixture("signed/lang-son-ecdsa-p256-c14n-no-keyinfo.xml");
        assert_eq!(verify(&ec, &[]), Signature::Invalid(DsigError::NoCertificate));
        assert_eq!(
            signers(&ec, &[cert("kttv-test-ec.pem")]),
            vec![cert("kttv-test-ec.pem")]
        );
        assert_eq!(
            verify(&ec, &[cert("kttv-test-rsa.pem"), cert("someone-else.pem")]),
            Signature::Invalid(DsigError::BadSignature(2))
        );
        // A document signed by another key verifies, and names that key's certificate.
        let other = fixture("signed/lang-son-signed-by-someone-else.xml");
        assert_eq!(signers(&other, &[]), vec![cert("someone-else.pem")]);
        // Line ends rewritten to CRLF in transit are normalized by any XML reader.
        let crlf = String::from_utf8(rsa.clone()).unwrap().replace('\n', "\r\n");
        assert_eq!(signers(crlf.as_bytes(), &[]), vec![cert("kttv-test-rsa.pem")]);
    }

    #[test]
    fn any_change_after_signing_is_caught() {
        let rsa = fixture("signed/lang-son-rsa-sha256-exc-c14n.xml");
        // The level raised (or lowered) on the way.
        let level = replace(&rsa, "<value>3</value>", "<value>1</value>");
        assert_eq!(verify(&level, &[]), Signature::Invalid(DsigError::Digest));
        // Another commune.
        let commune = replace(&rsa, "06385", "06388");
        assert_eq!(verify(&commune, &[]), Signature::Invalid(DsigError::Digest));
        // An element added next to the signature.
        let added = replace(&rsa, "<ds:Signature", "<note>x</note><ds:Signature");
        assert_eq!(verify(&added, &[]), Signature::Invalid(DsigError::Digest));
        // The signature value altered.
        let text = String::from_utf8(rsa.clone()).unwrap();
        let start = text.find("<ds:SignatureValue>").unwrap() + "<ds:SignatureValue>".len();
        let mut bytes = rsa.clone();
        bytes[start + 5] = if bytes[start + 5] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            verify(&bytes, &[]),
            Signature::Invalid(DsigError::BadSignature(1))
        );
        // The certificate swapped for another: the signature is not that key's.
        let other = fixture("signed/lang-son-signed-by-someone-else.xml");
        let other = String::from_utf8(other).unwrap();
        let cert_of = |s: &str| {
            s.split("X509Certificate>")
                .nth(1)
                .unwrap()
                .split("</")
                .next()
                .unwrap()
                .to_owned()
        };
        let swapped = text.replace(&cert_of(&text), &cert_of(&other));
        assert_eq!(
            verify(swapped.as_bytes(), &[]),
            Signature::Invalid(DsigError::BadSignature(1))
        );
    }

    #[test]
    fn what_cannot_be_checked_is_said_and_nothing_panics() {
        let constructed = fixture("lang-son-flood-level3-CONSTRUCTED.xml");
        assert_eq!(verify(&constructed, &[]), Signature::Unsigned);
        // NTWC's sample carries a <Signature> with its content elided.
        let ntwc = fixture("ntwc-tsunami-cancellation-update-circle.xml");
        assert!(
            matches!(verify(&ntwc, &[]), Signature::Invalid(DsigError::Malformed(ref m)) if m.contains("SignedInfo")),
            "{:?}",
            verify(&ntwc, &[])
        );
        let rsa = fixture("signed/lang-son-rsa-sha256-exc-c14n.xml");
        // SHA-1 is broken: refused, whatever the digest says.
        let sha1 = replace(
            &rsa,
            "http://www.w3.org/2001/04/xmlenc#sha256",
            "http://www.w3.org/2000/09/xmldsig#sha1",
        );
        assert!(matches!(
            verify(&sha1, &[]),
            Signature::Invalid(DsigError::Unsupported {
                what: "digest algorithm",
                ..
            })
        ));
        // A reference to part of the document only.
        let part = replace(&rsa, "URI=\"\"", "URI=\"#x\"");
        assert!(matches!(
            verify(&part, &[]),
            Signature::Invalid(DsigError::Unsupported { .. })
        ));
        // Without the enveloped transform the signature would sign itself.
        let no_env = replace(
            &rsa,
            "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>",
            "",
        );
        assert!(matches!(
            verify(&no_env, &[]),
            Signature::Invalid(DsigError::Malformed(_))
        ));
        // Hostile shapes: deep nesting, a DTD, an undeclared prefix, truncation.
        let deep = format!("<alert>{}{}</alert>", "<a>".repeat(10_000), "</a>".repeat(10_000));
        assert!(matches!(
            verify(deep.as_bytes(), &[]),
            Signature::Invalid(DsigError::Xml(_))
        ));
        let dtd = b"<!DOCTYPE alert [<!ENTITY x \"y\">]><alert/>";
        assert!(matches!(verify(dtd, &[]), Signature::Invalid(DsigError::Xml(_))));
        let namespaces: String = (0..100).map(|i| format!("<a xmlns:p{i}=\"urn:{i}\"/>")).collect();
        let namespaces = format!("<alert>{namespaces}</alert>");
        assert!(
            matches!(verify(namespaces.as_bytes(), &[]), Signature::Invalid(DsigError::Xml(ref m)) if m.contains("namespace declarations"))
        );
        let unbound = b"<alert><x:Signature/></alert>";
        assert!(matches!(
            verify(unbound, &[]),
            Signature::Unsigned | Signature::Invalid(_)
        ));
        for cut in [10, rsa.len() / 2, rsa.len() - 20] {
            assert!(
                matches!(verify(&rsa[..cut], &[]), Signature::Invalid(DsigError::Xml(_))),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn configured_certificates_are_read_from_pem_and_anything_else_is_refused() {
        let pem = std::fs::read(format!(
            "{}/fixtures/cap/signed/kttv-test-rsa.pem",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(
            certificates_from_pem(&pem).unwrap(),
            vec![cert("kttv-test-rsa.pem")]
        );
        let two = [
            pem.clone(),
            std::fs::read(format!(
                "{}/fixtures/cap/signed/kttv-test-ec.pem",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        ]
        .concat();
        assert_eq!(certificates_from_pem(&two).unwrap().len(), 2);
        assert!(
            certificates_from_pem(b"")
                .unwrap_err()
                .contains("no PEM certificate")
        );
        let junk = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(certificates_from_pem(junk).unwrap_err().contains("not X.509"));
    }

    #[test]
    fn ecdsa_r_and_s_become_der_integers() {
        // High bit set: a leading zero keeps the integer positive; leading zeros go.
        assert_eq!(
            ecdsa_der(&[0x80, 0x01, 0x00, 0x7f]).unwrap(),
            vec![0x30, 0x08, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x01, 0x7f]
        );
        assert_eq!(
            ecdsa_der(&[0, 0]).unwrap(),
            vec![0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00]
        );
        assert_eq!(ecdsa_der(&[1, 2, 3]), None);
        assert_eq!(ecdsa_der(&[]), None);
    }
}
