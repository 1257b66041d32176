//! Gene effects from annotated VCFs: snpEff's `ANN` (and its older `EFF`) and VEP's `CSQ`.
//!
//! Each annotation is a comma-separated list of `|`-separated entries, one per (allele,
//! transcript). The order of the sub-fields is read from the header's Description where the
//! annotator writes it (`Format: Allele|Consequence|IMPACT|SYMBOL|...` for VEP,
//! `'Allele | Annotation | Annotation_Impact | ...'` for snpEff), so added or reordered VEP
//! plugins columns do not shift the columns read.

/// Where the columns of one annotation field sit in its entries.
#[derive(Debug, Clone)]
pub struct EffectLayout {
    /// The INFO key: `ANN`, `EFF` or `CSQ`.
    pub key: &'static str,
    allele: Option<usize>,
    effect: Option<usize>,
    impact: Option<usize>,
    gene: Option<usize>,
    gene_id: Option<usize>,
    feature: Option<usize>,
    biotype: Option<usize>,
    hgvs_c: Option<usize>,
    hgvs_p: Option<usize>,
}

/// One (allele, transcript) annotation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effect {
    pub allele: Option<String>,
    pub effect: Option<String>,
    pub impact: Option<String>,
    pub gene: Option<String>,
    pub gene_id: Option<String>,
    pub feature: Option<String>,
    pub biotype: Option<String>,
    pub hgvs_c: Option<String>,
    pub hgvs_p: Option<String>,
}

fn position(names: &[String], wanted: &[&str]) -> Option<usize> {
    names
        .iter()
        .position(|n| wanted.iter().any(|w| n.eq_ignore_ascii_case(w)))
}

impl EffectLayout {
    /// The layout of an annotation INFO field, from its header Description.
    pub fn from_header(key: &str, description: &str) -> Option<EffectLayout> {
        match key {
            "ANN" => {
                // snpEff 4+: 'Allele | Annotation | Annotation_Impact | Gene_Name | Gene_ID |
                // Feature_Type | Feature_ID | Transcript_BioType | Rank | HGVS.c | HGVS.p | ...'
                let names = quoted_names(description).unwrap_or_else(|| {
                    [
                        "Allele",
                        "Annotation",
                        "Annotation_Impact",
                        "Gene_Name",
                        "Gene_ID",
                        "Feature_Type",
                        "Feature_ID",
                        "Transcript_BioType",
                        "Rank",
                        "HGVS.c",
                        "HGVS.p",
                    ]
                    .map(String::from)
                    .to_vec()
                });
                Some(EffectLayout {
                    key: "ANN",
                    allele: position(&names, &["Allele"]),
                    effect: position(&names, &["Annotation"]),
                    impact: position(&names, &["Annotation_Impact"]),
                    gene: position(&names, &["Gene_Name"]),
                    gene_id: position(&names, &["Gene_ID"]),
                    feature: position(&names, &["Feature_ID"]),
                    biotype: position(&names, &["Transcript_BioType"]),
                    hgvs_c: position(&names, &["HGVS.c"]),
                    hgvs_p: position(&names, &["HGVS.p"]),
                })
            }
            "CSQ" => {
                let names: Vec<String> = description
                    .split_once("Format:")?
                    .1
                    .trim()
                    .trim_matches('"')
                    .split('|')
                    .map(|s| s.trim().to_string())
                    .collect();
                Some(EffectLayout {
                    key: "CSQ",
                    allele: position(&names, &["Allele"]),
                    effect: position(&names, &["Consequence"]),
                    impact: position(&names, &["IMPACT"]),
                    gene: position(&names, &["SYMBOL"]),
                    gene_id: position(&names, &["Gene"]),
                    feature: position(&names, &["Feature"]),
                    biotype: position(&names, &["BIOTYPE"]),
                    hgvs_c: position(&names, &["HGVSc"]),
                    hgvs_p: position(&names, &["HGVSp"]),
                })
            }
            // EFF entries are `Effect(Impact|Class|Codon|AA|...)`; their columns are fixed
            // up to the gene name and differ after it between snpEff versions.
            "EFF" => Some(EffectLayout {
                key: "EFF",
                allele: None,
                effect: None,
                impact: None,
                gene: None,
                gene_id: None,
                feature: None,
                biotype: None,
                hgvs_c: None,
                hgvs_p: None,
            }),
            _ => None,
        }
    }

    /// The effects in one INFO value (the list of entries, already split on commas by the
    /// VCF reader). `alts` are the record's ALT alleles, for `EFF` entries, which name
    /// their allele by genotype number.
    pub fn parse(&self, entries: &[&str], alts: &[String], description: &str) -> Vec<Effect> {
        if self.key == "EFF" {
            return entries
                .iter()
                .filter_map(|e| parse_eff(e, alts, description))
                .collect();
        }
        let field = |parts: &[&str], i: Option<usize>| -> Option<String> {
            let v = parts.get(i?)?.trim();
            (!v.is_empty() && v != ".").then(|| decode(v))
        };
        entries
            .iter()
            .filter(|e| !e.is_empty() && **e != ".")
            .map(|e| {
                let parts: Vec<&str> = e.split('|').collect();
                Effect {
                    allele: field(&parts, self.allele),
                    effect: field(&parts, self.effect),
                    impact: field(&parts, self.impact),
                    gene: field(&parts, self.gene),
                    gene_id: field(&parts, self.gene_id),
                    feature: field(&parts, self.feature),
                    biotype: field(&parts, self.biotype),
                    hgvs_c: field(&parts, self.hgvs_c),
                    hgvs_p: field(&parts, self.hgvs_p),
                }
            })
            .collect()
    }
}

/// The names between the single quotes of a snpEff Description.
fn quoted_names(description: &str) -> Option<Vec<String>> {
    let start = description.find('\'')?;
    let rest = &description[start + 1..];
    let end = rest.find('\'')?;
    let names: Vec<String> = rest[..end]
        .split('|')
        .map(|s| s.trim().to_string())
        .collect();
    (names.len() > 3).then_some(names)
}

/// VEP percent-encodes `,;=|` and spaces inside values (`%3D` for `=` in HGVSp).
fn decode(v: &str) -> String {
    if !v.contains('%') {
        return v.to_string();
    }
    v.replace("%3D", "=")
        .replace("%3B", ";")
        .replace("%2C", ",")
        .replace("%7C", "|")
        .replace("%20", " ")
}

/// `NON_SYNONYMOUS_CODING(MODERATE|MISSENSE|Gag/Cag|R30Q|611|GENE|protein_coding|CODING|ENST1|2|1)`.
/// The columns are named in the header Description, as
/// `Effect ( Effect_Impact | Functional_Class | Codon_Change | Amino_Acid_Change| ...)`.
fn parse_eff(entry: &str, alts: &[String], description: &str) -> Option<Effect> {
    let (effect, rest) = entry.split_once('(')?;
    let inner = rest.strip_suffix(')').unwrap_or(rest);
    let parts: Vec<&str> = inner.split('|').map(str::trim).collect();
    let names: Vec<String> = description
        .split_once('(')
        .and_then(|(_, r)| r.rsplit_once(')').map(|(n, _)| n))
        .map(|n| {
            n.split('|')
                .map(|s| {
                    s.trim()
                        .trim_matches(|c| c == '[' || c == ']')
                        .trim()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_else(|| {
            [
                "Effect_Impact",
                "Functional_Class",
                "Codon_Change",
                "Amino_Acid_Change",
                "Amino_Acid_Length",
                "Gene_Name",
                "Transcript_BioType",
                "Gene_Coding",
                "Transcript_ID",
                "Exon_Rank",
                "Genotype_Number",
            ]
            .map(String::from)
            .to_vec()
        });
    let get = |wanted: &[&str]| -> Option<String> {
        let v = parts.get(position(&names, wanted)?)?.trim();
        (!v.is_empty() && v != ".").then(|| v.to_string())
    };
    let aa = get(&["Amino_Acid_Change", "Amino_Acid_change"]);
    // snpEff 3.x writes `p.Leu30Gln/c.89T>A` here; older versions the bare `R30Q`.
    let (hgvs_p, hgvs_c) = match &aa {
        Some(a) if a.contains("/c.") => {
            let (p, c) = a.split_once('/').expect("checked");
            (Some(p.to_string()), Some(c.to_string()))
        }
        _ => (aa, None),
    };
    let allele = get(&["Genotype_Number", "GenotypeNum", "Genotype"])
        .and_then(|g| g.parse::<usize>().ok())
        .and_then(|n| alts.get(n.checked_sub(1)?).cloned());
    Some(Effect {
        allele,
        effect: Some(effect.trim().to_string()),
        impact: get(&["Effect_Impact"]),
        gene: get(&["Gene_Name"]),
        gene_id: None,
        feature: get(&["Transcript_ID"]),
        biotype: get(&["Transcript_BioType"]),
        hgvs_c,
        hgvs_p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snpeff_ann_entries_follow_the_header_order() {
        let desc = "Functional annotations: 'Allele | Annotation | Annotation_Impact | Gene_Name | Gene_ID | Feature_Type | Feature_ID | Transcript_BioType | Rank | HGVS.c | HGVS.p | cDNA.pos / cDNA.length | CDS.pos / CDS.length | AA.pos / AA.length | Distance | ERRORS / WARNINGS / INFO' ";
        let l = EffectLayout::from_header("ANN", desc).unwrap();
        let e = l.parse(
            &["T|missense_variant|MODERATE|EGFR|ENSG00000146648|transcript|ENST00000275493|protein_coding|21/28|c.2573T>G|p.Leu858Arg|2573/9821|2573/3633|858/1210||", "T|upstream_gene_variant|MODIFIER|X|G2|transcript|T2|lincRNA||n.-1C>T|||||4|"],
            &["T".into()],
            desc,
        );
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].gene.as_deref(), Some("EGFR"));
        assert_eq!(e[0].impact.as_deref(), Some("MODERATE"));
        assert_eq!(e[0].hgvs_p.as_deref(), Some("p.Leu858Arg"));
        assert_eq!(e[0].feature.as_deref(), Some("ENST00000275493"));
        assert_eq!(e[1].hgvs_p, None);
        assert_eq!(e[1].hgvs_c.as_deref(), Some("n.-1C>T"));
    }

    #[test]
    fn vep_csq_columns_are_found_by_name() {
        let desc = "Consequence annotations from Ensembl VEP. Format: Allele|Consequence|IMPACT|SYMBOL|Gene|Feature_type|Feature|BIOTYPE|EXON|INTRON|HGVSc|HGVSp";
        let l = EffectLayout::from_header("CSQ", desc).unwrap();
        let e = l.parse(
            &["A|missense_variant|MODERATE|KRAS|ENSG00000133703|Transcript|ENST00000256078|protein_coding|2/6||ENST00000256078.10:c.35G>T|ENSP00000256078.5:p.Gly12Val%3D"],
            &["A".into()],
            desc,
        );
        assert_eq!(e[0].gene.as_deref(), Some("KRAS"));
        assert_eq!(e[0].gene_id.as_deref(), Some("ENSG00000133703"));
        assert_eq!(
            e[0].hgvs_p.as_deref(),
            Some("ENSP00000256078.5:p.Gly12Val=")
        );
    }

    #[test]
    fn old_snpeff_eff_entries_name_their_allele_by_number() {
        let desc = "Predicted effects for this variant.Format: 'Effect ( Effect_Impact | Functional_Class | Codon_Change | Amino_Acid_change| Amino_Acid_length | Gene_Name | Transcript_BioType | Gene_Coding | Transcript_ID | Exon  | GenotypeNum [ | ERRORS | WARNINGS ] )' ";
        let e = parse_eff(
            "NON_SYNONYMOUS_CODING(MODERATE|MISSENSE|Gag/Cag|R30Q|611|PLEKHN1|protein_coding|CODING|ENST00000379410|2|1)",
            &["C".into()],
            desc,
        )
        .unwrap();
        assert_eq!(e.effect.as_deref(), Some("NON_SYNONYMOUS_CODING"));
        assert_eq!(e.impact.as_deref(), Some("MODERATE"));
        assert_eq!(e.gene.as_deref(), Some("PLEKHN1"));
        assert_eq!(e.hgvs_p.as_deref(), Some("R30Q"));
        assert_eq!(e.feature.as_deref(), Some("ENST00000379410"));
    }
}
