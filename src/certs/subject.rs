//! The subject of a certificate keyward issues: a common name and an optional organization and
//! organizational unit, parsed from `"CN=web01,O=Example,OU=Ops"` (or OpenSSL's `-subj` form
//! `"/CN=web01/O=Example"`).

use std::fmt;
use std::str::FromStr;

use super::CertError;

/// A certificate subject: CN, and optionally O and OU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    common_name: String,
    organization: Option<String>,
    organizational_unit: Option<String>,
}

impl Subject {
    /// A subject with only a common name.
    pub fn new(common_name: &str) -> Result<Self, CertError> {
        Ok(Self {
            common_name: non_empty("CN", common_name)?,
            organization: None,
            organizational_unit: None,
        })
    }

    /// Adds an organization (`O`).
    pub fn with_organization(mut self, organization: &str) -> Result<Self, CertError> {
        self.organization = Some(non_empty("O", organization)?);
        Ok(self)
    }

    /// Adds an organizational unit (`OU`).
    pub fn with_organizational_unit(mut self, unit: &str) -> Result<Self, CertError> {
        self.organizational_unit = Some(non_empty("OU", unit)?);
        Ok(self)
    }

    /// Parses `"CN=x,O=y,OU=z"` (any order, attribute names in any case, `\,` for a literal
    /// comma) or `"/CN=x/O=y/OU=z"`.
    pub fn parse(input: &str) -> Result<Self, CertError> {
        let input = input.trim();
        let (body, separator) = match input.strip_prefix('/') {
            Some(rest) => (rest, '/'),
            None => (input, ','),
        };
        if body.is_empty() {
            return Err(CertError::MissingCommonName);
        }
        let (mut cn, mut o, mut ou) = (None, None, None);
        for part in split_unescaped(body, separator)? {
            let Some((attribute, value)) = part.split_once('=') else {
                return Err(CertError::MalformedSubject { part });
            };
            let (name, slot) = match attribute.trim().to_ascii_uppercase().as_str() {
                "CN" => ("CN", &mut cn),
                "O" => ("O", &mut o),
                "OU" => ("OU", &mut ou),
                _ => {
                    return Err(CertError::UnknownAttribute {
                        attribute: attribute.trim().to_owned(),
                    });
                }
            };
            if slot.is_some() {
                return Err(CertError::DuplicateAttribute { attribute: name });
            }
            *slot = Some(non_empty(name, value)?);
        }
        Ok(Self {
            common_name: cn.ok_or(CertError::MissingCommonName)?,
            organization: o,
            organizational_unit: ou,
        })
    }

    /// The common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// The organization, if any.
    pub fn organization(&self) -> Option<&str> {
        self.organization.as_deref()
    }

    /// The organizational unit, if any.
    pub fn organizational_unit(&self) -> Option<&str> {
        self.organizational_unit.as_deref()
    }

    /// The `rcgen` distinguished name, in the order OpenSSL's `-subj` would write it (CN, O, OU).
    pub(super) fn to_distinguished_name(&self) -> rcgen::DistinguishedName {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, self.common_name.as_str());
        if let Some(o) = &self.organization {
            dn.push(rcgen::DnType::OrganizationName, o.as_str());
        }
        if let Some(ou) = &self.organizational_unit {
            dn.push(rcgen::DnType::OrganizationalUnitName, ou.as_str());
        }
        dn
    }
}

impl FromStr for Subject {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Subject {
    /// `CN=x, O=y, OU=z`, as [`CertInfo::subject`](super::CertInfo) prints a parsed certificate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CN={}", self.common_name)?;
        if let Some(o) = &self.organization {
            write!(f, ", O={o}")?;
        }
        if let Some(ou) = &self.organizational_unit {
            write!(f, ", OU={ou}")?;
        }
        Ok(())
    }
}

fn non_empty(attribute: &'static str, value: &str) -> Result<String, CertError> {
    let value = value.trim();
    if value.is_empty() {
        Err(CertError::EmptyValue { attribute })
    } else {
        Ok(value.to_owned())
    }
}

/// Splits on `separator` where it is not escaped with a backslash, removing the escapes.
fn split_unescaped(input: &str, separator: char) -> Result<Vec<String>, CertError> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = input.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => current.push(escaped),
                None => return Err(CertError::MalformedSubject { part: current }),
            },
            c if c == separator => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_attributes_in_any_order_and_case() {
        let s = Subject::parse(" ou=Ops , CN = web01,O=Example ").unwrap();
        assert_eq!(s.common_name(), "web01");
        assert_eq!(s.organization(), Some("Example"));
        assert_eq!(s.organizational_unit(), Some("Ops"));
        assert_eq!(s.to_string(), "CN=web01, O=Example, OU=Ops");
    }

    #[test]
    fn parses_openssl_subj_form_and_escaped_commas() {
        let s = Subject::parse("/CN=web01/O=Acme, Inc.").unwrap();
        assert_eq!(s.organization(), Some("Acme, Inc."));
        let s: Subject = r"CN=web01,O=Acme\, Inc.".parse().unwrap();
        assert_eq!(s.organization(), Some("Acme, Inc."));
        assert_eq!(s.organizational_unit(), None);
    }

    #[test]
    fn builder_matches_parser() {
        let built = Subject::new("a")
            .unwrap()
            .with_organization("b")
            .unwrap()
            .with_organizational_unit("c")
            .unwrap();
        assert_eq!(built, Subject::parse("CN=a,O=b,OU=c").unwrap());
        assert!(matches!(
            Subject::new("  "),
            Err(CertError::EmptyValue { attribute: "CN" })
        ));
    }

    #[test]
    fn rejects_bad_subjects_with_the_reason() {
        let err = |s: &str| Subject::parse(s).unwrap_err();
        assert!(
            matches!(err("CN=x,C=DE"), CertError::UnknownAttribute { attribute } if attribute == "C")
        );
        assert!(matches!(
            err("CN=x,O="),
            CertError::EmptyValue { attribute: "O" }
        ));
        assert!(matches!(
            err("CN=a,CN=b"),
            CertError::DuplicateAttribute { attribute: "CN" }
        ));
        assert!(matches!(err("O=x"), CertError::MissingCommonName));
        assert!(matches!(err("web01"), CertError::MalformedSubject { part } if part == "web01"));
        assert!(matches!(err(r"CN=x\"), CertError::MalformedSubject { .. }));
        assert!(matches!(err(""), CertError::MissingCommonName));
        assert!(matches!(err("CN=x,"), CertError::MalformedSubject { .. }));
        assert!(
            err("CN=x,L=Berlin")
                .to_string()
                .contains("use CN, O and OU")
        );
    }
}
