//! The built-in detectors: a pattern that finds candidates and a rule that confirms them.

use std::net::{Ipv4Addr, Ipv6Addr};

use base64::Engine as _;

/// What a detector looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// Personal data.
    Pii,
    /// Credentials and keys.
    Secret,
    /// Prompt injection and jailbreak attempts (scored).
    Jailbreak,
    /// A tenant's own rule.
    Custom,
}

/// How a candidate is confirmed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Confirm {
    /// The pattern is specific enough.
    Pattern,
    /// 13-19 digits of a known brand that pass the Luhn check.
    Card,
    /// Not a never-issued area, group or serial.
    Ssn,
    /// Four octets of at most 255, not part of a longer dotted version string.
    Ipv4,
    /// Parses as an IPv6 address with at least three groups written.
    Ipv6,
    /// A North American number whose area code and exchange do not start with 0 or 1.
    Phone,
    /// An address, not an SCP-style `git@host:path` remote.
    Email,
    /// Between this many digits (inclusive), and not a date.
    Digits(usize, usize),
    /// Reads like a chosen or generated secret: long enough, of several kinds of character
    /// (or random-looking), not a stand-in value, a number, a date or a version.
    Credential,
    /// A JWT whose header decodes to JSON naming an algorithm.
    Jwt,
    /// At least this many bits of entropy per character.
    Entropy(f64),
}

/// A built-in detector's definition.
pub(crate) struct Builtin {
    pub name: &'static str,
    pub category: Category,
    pub pattern: &'static str,
    /// Capture group whose span is the finding (0: the whole match).
    pub group: usize,
    pub confirm: Confirm,
    /// Jailbreak score contributed by a match.
    pub weight: f32,
}

const fn rule(
    name: &'static str,
    category: Category,
    pattern: &'static str,
    confirm: Confirm,
) -> Builtin {
    Builtin {
        name,
        category,
        pattern,
        group: 0,
        confirm,
        weight: 0.0,
    }
}

const fn scored(name: &'static str, pattern: &'static str, weight: f32) -> Builtin {
    Builtin {
        name,
        category: Category::Jailbreak,
        pattern,
        group: 0,
        confirm: Confirm::Pattern,
        weight,
    }
}

/// Every built-in detector. Order matters only for ties between overlapping findings.
pub(crate) const BUILTINS: &[Builtin] = &[
    // --- secrets (before PII, so that a key is named as a key) ---
    rule(
        "pem_private_key",
        Category::Secret,
        r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----)?",
        Confirm::Pattern,
    ),
    rule(
        "anthropic_key",
        Category::Secret,
        r"\bsk-ant-[a-z]+\d{2}-[A-Za-z0-9_-]{32,}",
        Confirm::Pattern,
    ),
    rule(
        "openai_key",
        Category::Secret,
        r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
        Confirm::Entropy(3.0),
    ),
    rule(
        "aws_access_key_id",
        Category::Secret,
        r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b",
        Confirm::Pattern,
    ),
    Builtin {
        name: "aws_secret_key",
        category: Category::Secret,
        pattern: r#"(?i)aws.{0,20}?(?:secret|sk)[a-z_]{0,20}\s*[:=]\s*["']?([A-Za-z0-9/+]{40})\b"#,
        group: 1,
        confirm: Confirm::Entropy(3.5),
        weight: 0.0,
    },
    rule(
        "github_token",
        Category::Secret,
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,})\b",
        Confirm::Pattern,
    ),
    rule(
        "gitlab_token",
        Category::Secret,
        r"\bgl(?:pat|dt|rt|ptt|cbt|oas)-[A-Za-z0-9_-]{20,}",
        Confirm::Entropy(3.0),
    ),
    rule(
        "slack_token",
        Category::Secret,
        r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
        Confirm::Pattern,
    ),
    Builtin {
        name: "slack_webhook",
        category: Category::Secret,
        pattern: r"hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/-]*?/([A-Za-z0-9]{20,})",
        group: 1,
        confirm: Confirm::Pattern,
        weight: 0.0,
    },
    rule(
        "google_api_key",
        Category::Secret,
        r"\bAIza[0-9A-Za-z_-]{35}",
        Confirm::Pattern,
    ),
    rule(
        "stripe_key",
        Category::Secret,
        r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{24,}",
        Confirm::Entropy(3.0),
    ),
    rule(
        "platform_token",
        Category::Secret,
        r"\b(?:npm_[A-Za-z0-9]{36}|hf_[A-Za-z]{34}|SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}|shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}|key-[a-f0-9]{32}|SK[0-9a-f]{32}|dop_v1_[a-f0-9]{64}|pypi-[A-Za-z0-9_-]{50,}|glc_[A-Za-z0-9+/]{32,}={0,2}|xai-[A-Za-z0-9]{40,}|gsk_[A-Za-z0-9]{40,}|dckr_pat_[A-Za-z0-9_-]{20,}|dapi[a-f0-9]{32}|sq0(?:atp|csp)-[A-Za-z0-9_-]{22,}|EAA[A-Za-z0-9]{60,}|ya29\.[A-Za-z0-9_-]{30,}|AccountKey=[A-Za-z0-9+/]{40,}={0,2})(?-u:\b)",
        Confirm::Pattern,
    ),
    rule(
        "telegram_bot_token",
        Category::Secret,
        r"\b\d{8,10}:AA[A-Za-z0-9_-]{33}\b",
        Confirm::Pattern,
    ),
    rule(
        "jwt",
        Category::Secret,
        r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
        Confirm::Jwt,
    ),
    Builtin {
        name: "authorization_header",
        category: Category::Secret,
        pattern: r"(?i)(?:\b(?:authorization|proxy-authorization)\s*[:=]\s*(?:basic|bearer|token|digest)|\bbearer)\s+([A-Za-z0-9._~+/-]{16,}=*)",
        group: 1,
        confirm: Confirm::Entropy(3.0),
        weight: 0.0,
    },
    Builtin {
        name: "connection_string_password",
        category: Category::Secret,
        pattern: r"://[^\s:/@]*:([^\s@/]{3,128})@[A-Za-z0-9.\[-]",
        group: 1,
        confirm: Confirm::Credential,
        weight: 0.0,
    },
    Builtin {
        name: "generic_secret",
        category: Category::Secret,
        pattern: r#"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|token|access[_-]?key|auth[_-]?token|password|passwd|pwd)\b["']?\s*[:=]\s*["']?([A-Za-z0-9_\-+/=.]{16,})"#,
        group: 1,
        confirm: Confirm::Entropy(3.5),
        weight: 0.0,
    },
    Builtin {
        name: "credential_assignment",
        category: Category::Secret,
        // A credential's name, up to a few words (`Passwort für den Admin lautet:`), an
        // assignment or a space, then a value with a digit in it that reads like a secret.
        pattern: r#"(?i)(?:(?:pass(?:word|wd|phrase|wort)?|pwd|secret|token|api[_-]?key|apikey|access[_-]?key|account[_-]?key|private[_-]?key|client[_-]?secret|credentials?|auth|kennwort|contrase(?:ñ|n)a|mot de passe|senha|wachtwoord|has(?:ł|l)o|heslo|jelsz(?:ó|o)|salasana|l(?:ö|o)senord|passord|adgangskode|(?:ş|s)ifre|parola|clave|пароль|كلمة المرور|סיסמה|암호|비밀번호|パスワード|密码|密碼|m(?:ậ|a)t kh(?:ẩ|a)u|kata sandi)[A-Za-z_]*["'\]]*[^\S\n]*(?:[:=]|=>)?[^\n"'=:{}$()]{0,32}?(?:[:=]|=>)?[^\S\n]*["']?|(?:^|[\t ])-p[\t "']*|--password[= ])([^\s"'`;,<>{}]*\d[^\s"'`;,<>{}]*)"#,
        group: 1,
        confirm: Confirm::Credential,
        weight: 0.0,
    },
    // --- PII ---
    rule(
        "email",
        Category::Pii,
        r"(?-u:\b)[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?-u:\b)",
        Confirm::Email,
    ),
    rule(
        "email_obfuscated",
        Category::Pii,
        r"(?i)(?-u:\b)[A-Za-z0-9._%+-]+ ?[\[({<] ?at ?[\])}>] ?[A-Za-z0-9-]+(?: ?[\[({<] ?dot ?[\])}>] ?[A-Za-z0-9-]+)+",
        Confirm::Pattern,
    ),
    rule(
        "card_number",
        Category::Pii,
        r"(?-u:\b)\d(?:[ .\-]?\d){12,18}(?-u:\b)",
        Confirm::Card,
    ),
    rule(
        "us_ssn",
        Category::Pii,
        r"(?-u:\b)(?:\d{3}-\d{2}-\d{4}|\d{3} \d{2} \d{4}|\d{3}\.\d{2}\.\d{4})(?-u:\b)",
        Confirm::Ssn,
    ),
    Builtin {
        name: "us_ssn_labelled",
        category: Category::Pii,
        pattern: r"(?i)(?:\bssn|\bsocial security|\bsoc\.? ?sec|\bss ?(?:number|no\b|#)|\bitin\b)[^0-9\n]{0,24}(\d{3}[ .-]?\d{2}[ .-]?\d{4})(?-u:\b)",
        group: 1,
        confirm: Confirm::Ssn,
        weight: 0.0,
    },
    rule(
        "phone_e164",
        Category::Pii,
        r"(?:\+|(?-u:\b)00)[1-9]\d{0,3}(?:[ .\-]?\(0\))?(?:[ .\-/]?\(?\d{1,5}\)?){1,6}",
        Confirm::Digits(8, 15),
    ),
    rule(
        "phone_national",
        Category::Pii,
        r"(?:(?-u:\b)1[ .-]|\+1[ .-]?)?(?:\(\d{3}\)\s?|(?-u:\b)\d{3}[-. ])\d{3}[-. ]\d{4}(?-u:\b)",
        Confirm::Phone,
    ),
    rule(
        "phone_trunk",
        Category::Pii,
        r"(?:\([0-9]{2,4}\)[ ]?|(?-u:\b)0[1-9][0-9]{0,3}[ .\-/])[0-9]{2,8}(?:[ .\-][0-9]{2,4}){0,3}(?-u:\b)",
        Confirm::Digits(9, 12),
    ),
    Builtin {
        name: "phone_labelled",
        category: Category::Pii,
        pattern: r"(?i)(?:\b(?:tel|tél|phone|mobile|mob|cell|fax|call|ring|text me|dial|whatsapp|handy|telefon|t(?:é|e)l(?:é|e)phone|portable|tel(?:é|e)fono|ll(?:á|a)mame|celular|centralino|telefone|hotline|switchboard|liga|ligue|contato|telefoon|bel|zadzwo(?:ń|n)|puhelin)\b|電話|电话|携帯|手机|전화|연락처|Телефон|тел|هاتف|جوال|للتواصل|اتصل)[^\d+\n]{0,15}(\+?\(?\d[\d ()./-]{5,18}\d)",
        group: 1,
        confirm: Confirm::Digits(7, 15),
        weight: 0.0,
    },
    rule(
        "ipv4",
        Category::Pii,
        r"(?-u:\b)(?:\d{1,3}\.){3}\d{1,3}(?-u:\b)",
        Confirm::Ipv4,
    ),
    rule(
        "ipv6",
        Category::Pii,
        r"(?i)(?:(?-u:\b)[0-9a-f]{1,4}|::)(?::{1,2}[0-9a-f]{1,4}){2,7}(?:::)?",
        Confirm::Ipv6,
    ),
    // --- jailbreak and prompt injection: scored ---
    scored(
        "instruction_hijacking",
        r"(?i)\b(?:ignore|disregard|forget|override|bypass|discard|abandon)\b[^.\n]{0,40}?\b(?:previous|prior|above|earlier|preceding|all|your|the|any|my|these|those|original|initial|system)\b[^.\n]{0,40}?\b(?:instructions?|rules|prompts?|directions|directives?|guidelines|guardrails|polic(?:y|ies)|programming|training|constraints|criteria|context|request|question)\b",
        0.7,
    ),
    scored(
        "instruction_hijacking_translated",
        r"(?i)\b(?:ignor(?:e|ez|a|iere|ier|en|uj|era|er|oi|eer)|zignoruj|negeer|oublie[zs]?|vergiss|olvida|dimentica|esque(?:ç|c)a|игнорируй|проигнорируй|забудь)\b[^.\n]{0,40}?\b(?:instructions?|consignes|r(?:e|è)gles|anweisungen|regeln|instrucciones|reglas|istruzioni|regole|instru(?:ç|c)(?:õ|o)es|instructies|polecenia|instrukcje|instruktioner|instruksjoner|ohjeet|инструкции|указания|demande|anfrage|petici(?:ó|o)n)|指示(?:を|は)?(?:すべて|全て)?無視|忽略[^。\n]{0,12}(?:指令|指示|说明)|(?:지시|명령|지침)[을를]?\s?(?:모두\s)?무시|تجاهل[^.\n]{0,30}التعليمات",
        0.7,
    ),
    scored(
        "instruction_reset",
        r"(?i)\b(?:forget|ignore|disregard)\s+(?:everything|all|anything|what)\s+(?:before|above|prior|earlier|you (?:were|have been) told)|\beverything (?:above|before this) (?:was|is) (?:a |just a |only a )?(?:test|fake|joke)|\bprevious (?:instructions?|system (?:message|prompt)|rules)\b[^.\n]{0,40}\b(?:revoked|void|cancelled|canceled|obsolete|(?:was|were) (?:only |just )?(?:a test|written by))|\b(?:new|real|updated|actual) (?:instructions?|task|directive|system (?:prompt|message))\s*:|\b(?:ignore|disregard|forget)\s+(?:all\s+|everything\s+|the\s+|anything\s+)?(?:above|before this|previous|prior)\s*(?:[.!,;]|$|and\b)|\boublie tout\b|\bvergiss alles\b",
        0.7,
    ),
    scored(
        "chat_template_tokens",
        r"(?i)<\|(?:im_start|im_end|system|user|assistant|endoftext|start_header_id|end_header_id|eot_id|begin_of_text|end_of_text|eom_id|im_sep)\|>|<(?:start|end)_of_turn>|\[/?INST\]|<</?SYS>>|<\|?(?:begin|end)(?:_|▁)of(?:_|▁)sentence\|?>",
        0.7,
    ),
    scored(
        "fake_system_header",
        r"(?im)^[\s>*#=\[(-]*(?:system|admin(?:istrator)?|developer|root|operator)(?:\s+(?:override|message|prompt|update|instructions?|policy|mode|notice|note))*\s*(?:\]|:|=+|\)|\*\*)|\[(?:system|admin)[^\]\n]{0,30}\]|={2,}\s*(?:begin|start)\s+(?:system|admin|developer)\b|</?(?:system|sys|admin)>",
        0.5,
    ),
    scored(
        "role_confusion",
        r"(?i)\b(?:you are now|you're now|from now on,? you(?:'re| are| will)?|pretend (?:to be|you are|you're)|act as (?:an? )?(?:unrestricted|unfiltered|uncensored|jailbroken)|act as (?:the )?system|(?:my|these|the following) messages? (?:are|is) (?:a )?system|developer mode|do anything now|god mode|sudo mode|opposite mode|dan mode|evil (?:mode|bot)|jailbr(?:eak|oken) mode|you are (?:DAN|STAN|AIM|DUDE|LIBRE|[A-Z]{3,}BOT)\b|a partir de ahora|d(?:é|e)sormais tu|ab jetzt bist du|mode d(?:é|e)veloppeur|modo (?:de )?desarrollador|modo desenvolvedor|entwicklermodus|ontwikkelaarsmodus|tryb dewelopera|режим разработчика|开发者模式|開發者模式|開発者モード|개발자 모드|وضع المطور)",
        0.4,
    ),
    scored(
        "context_smuggling",
        r"(?i)\b(?:reveal|print|show|repeat|output|leak|tell me|disclose|display|list|dump|send|give me)\b[^.\n]{0,40}?\b(?:system prompt|hidden (?:prompt|instructions)|initial (?:instructions|prompt)|your (?:instructions|prompt|configuration|keys|api keys)|(?:the )?(?:conversation|chat) history|saved passwords|(?:activation|license|licence|product|serial|cd) keys|~/\.ssh|environment variables|prompt syst(?:e|è)me|systemprompt|システムプロンプト)",
        0.5,
    ),
    scored(
        "restriction_removal",
        r"(?i)\b(?:no|without(?: any)?|free (?:of|from)|never (?:given|had)(?: any)?|lift(?:ed)?(?: all)?|remove(?:d)?(?: all)?|disable(?:d)?(?: all)?|no longer bound by)\s+(?:(?:ethical|content|safety|moral|the|your|any|its)\s+)*(?:restrictions?|limitations|limits|filters?|rules|guidelines|censorship|polic(?:y|ies)|guardrails)\b|\b(?:never|will not|won't|doesn't|does not) (?:refuse|say no|decline)|\b(?:unfiltered|uncensored) mode\b|\bsans (?:aucune )?(?:limite|restriction|filtre)s?\b|\bsin (?:ninguna )?(?:restricci(?:o|ó)n|restricciones|l(?:i|í)mites|filtros)\b|\bno longer bound by\b|\b(?:restrictions?|limitations|limits|filters?|rules|guidelines|guardrails|safety (?:rules|filters|polic(?:y|ies)))\s+(?:are|have been|were|is|has been)\s+(?:now\s+)?(?:lifted|removed|disabled|revoked|suspended|off|void)\b|\bsenza filtri\b|zonder beperkingen|sem restri(?:çõ|co)es|bez ogranicze(?:ń|n)|без ограничений|没有任何(?:内容)?限制|제한이 없는|بدون أي قيود|制限(?:なし|のない)|\bohne (?:jede )?(?:einschr(?:ä|a)nkungen|filter|regeln)\b",
        0.4,
    ),
    scored(
        "indirect_injection",
        r"(?i)\b(?:note|message|instructions?|attention|hinweis|nachricht|remarque)\s+(?:to|for|pour|f(?:ü|u)r|an)\s+(?:the |any |all |l'|die |den )?(?:ai|a\.i\.|assistants?|llms?|language models?|models?|chatbots?|bots?|agents?|ki|ia|summari[sz]ers?)\b|\b(?:ai|llm|gpt|assistant|chatbot|ia|ki)s?(?:[- ](?:assistants?|agents?|summari[sz]ers?|models?|screeners?))?\s*(?:reading|summari[sz]ing|processing|screening|parsing|viewing) (?:this|the)\b|(?m:^\s*(?:ai|llm|assistant|ai assistant|ai summari[sz]ers?|ki-assistenten?)\s*:)|\bwhen you (?:summari[sz]e|read|process|answer)\b[^.\n]{0,40}\b(?:also|instead|do not mention|don't mention|append)\b|\bdo not (?:mention|reveal|tell the user about) (?:this|these instructions)\b|\bTODO\(ai[- ]?agent\)|!\[[^\]\n]*\]\(https?://[^)\s]*\?[^)\s]*=(?:DATA|\{|\$|<)",
        0.5,
    ),
    scored(
        "audience_override",
        r"(?i)\b(?:ignore|disregard|forget)\s+(?:the|this|that|my|your)\s+(?:user|human|operator|developer)s?\b",
        0.3,
    ),
    scored(
        "addressed_instruction",
        r"(?i)\b(?:ai|llm|gpt|chatbot|assistant|ki|ia)s?(?: (?:assistants?|summari[sz]ers?|agents?|models?|bots?|screeners?|crawlers?))?\s*:\s*(?:ignore|disregard|forget|do not|don't|always|never|instead|when you|you must|recommend|rank|from now on|end every|start every|append|forward|execute|run)\b",
        0.7,
    ),
    scored(
        "compliance_check",
        r#"(?i)\b(?:confirm|acknowledge)\b[^.\n]{0,30}\b(?:by (?:saying|replying|typing|responding|answering|writing)|with (?:'|"|“))"#,
        0.3,
    ),
    scored("transcript_turns", r"(?m)^\s*(?:Human|Assistant)\s*:", 0.2),
    scored(
        "prompt_extraction",
        r#"(?i)\b(?:repeat|print|output|copy|write out|reproduce|echo|dump)\b(?: out)? (?:everything|all|the (?:words|text|content|lines|instructions)|all (?:the )?text)\b(?: [a-z]+){0,3}? above\b|\bstarting with (?:the phrase )?["'“]?you are\b|\byour (?:system|developer|initial) (?:prompt|message|instructions)\b[^.\n]{0,30}\b(?:verbatim|word for word|in full|exactly|code block)|\bverbatim\b[^.\n]{0,30}\b(?:system prompt|instructions)\b"#,
        0.7,
    ),
    scored(
        "refusal_suppression",
        r"(?i)\bnever (?:apologi[sz]e|refuse|say (?:no|you can't|you cannot)|add (?:any )?(?:warnings|disclaimers|caveats))|\b(?:no|without|don't add|do not add|never add|omit (?:all|any)) (?:warnings|disclaimers|caveats|moralizing)\b|\bnever use the (?:words|phrases)\b|\b(?:stay|remain) in character\b|\bdo not break character\b|\bas if it were my (?:actual|real) (?:request|question)\b|\bin (?:that|the) (?:hypothetical )?ai's voice\b|\b(?:an? )?ai with(?:out)? (?:no |any )?(?:safety|ethical|content|moral) (?:training|guidelines|filters|restrictions|rules)\b",
        0.5,
    ),
    scored(
        "harmful_topic",
        r"(?i)\b(?:methamphetamine|meth lab|cook meth|pipe bomb|napalm|ransomware|nerve agent|sarin|ricin|anthrax|bioweapon|explosives?|detonator|thermite|keylogger|credential stealer|untraceable (?:gun|firearm)|ghost gun|card skimmer|bypass the immobili[sz]er|hot-?wire|molotov)\b",
        0.3,
    ),
    scored(
        "operational_detail",
        r"(?i)\bstep[- ]by[- ]step\b|\bexact (?:steps|quantities|reagents|temperatures|amounts|measurements)\b|\bdetailed instructions\b|\bworking (?:code|exploit|malware)\b|\bwith code\b|\bfull (?:technical )?detail\b",
        0.3,
    ),
    scored(
        "fictional_framing",
        r"(?i)\bhypothetically\b|\bpurely fictional\b|\bfor (?:a|my) (?:novel|story|screenplay|thriller)\b|\b(?:write|in) a (?:gritty |realistic )?(?:thriller|novel|story|screenplay) (?:scene )?where\b|\bfor realism\b|\baccuracy matters\b",
        0.3,
    ),
    scored(
        "agent_hijacking",
        r"(?i)\b(?:assistant|ai|system|model|agent) instruction\s*:|\bthe (?:assistant|ai|model|agent) is now (?:authori[sz]ed|allowed|permitted|required|instructed)\b|\bwithout (?:the )?user(?:'s)? (?:confirmation|consent|knowledge|approval)\b|\bdo not (?:mention|tell|reveal|inform|disclose)\b[^.\n]{0,30}\bthe user\b|\b(?:curl|wget)\s[^|\n]{0,100}\|\s*(?:ba)?sh\b|\bif you are an? (?:ai|llm|language model|[a-z-]{0,40} ?(?:agent|assistant|model|bot))\b|\b(?:entire|full|whole) conversation(?: history)?\b|~/\.ssh|\bid_rsa\b|\.aws/credentials|/etc/shadow|\b(?:assistant|ai|llm|agent),\s+when you\b",
        0.5,
    ),
    scored(
        "obfuscated_instruction",
        r"(?i)\bi +g +n +o +r +e\b|\b[i1]gn[o0]r[e3] +[a4]ll +pr[e3]v[i1][o0]u[s5]|\b(?:decode|base64)\b[^.\n]{0,40}\b(?:follow|execute|obey|run)\b[^.\n]{0,30}\binstructions?\b",
        0.7,
    ),
    scored(
        "persona_exploit",
        r"(?i)\bact as my (?:deceased|dead|late) (?:grand(?:ma|mother|pa|father)|mother|father)\b|\blet's play a game\b[^\n]{0,80}\b(?:never refuses?|no (?:rules|restrictions|guidelines)|avoid norms)|\bbreak the rules\b",
        0.5,
    ),
];

/// Luhn check over the digits of `text`.
fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(*d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn card(text: &str) -> bool {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect();
    let prefix = |n: usize| {
        digits
            .iter()
            .take(n)
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    let len = digits.len();
    // Issuer ranges of the card networks (Visa, Mastercard, Amex, Diners, JCB, Discover,
    // UnionPay, Maestro, Mir) and their lengths.
    let brand = match digits.first() {
        Some(4) => matches!(len, 13 | 16 | 19),
        Some(5) => {
            ((51..=55).contains(&prefix(2)) && len == 16)
                || ((prefix(2) == 50 || (56..=59).contains(&prefix(2))) && (13..=19).contains(&len))
        }
        Some(2) => {
            ((2221..=2720).contains(&prefix(4)) && len == 16)
                || ((2200..=2204).contains(&prefix(4)) && (16..=19).contains(&len))
        }
        Some(3) => {
            (matches!(prefix(2), 34 | 37) && len == 15)
                || ((3528..=3589).contains(&prefix(4)) && (16..=19).contains(&len))
                || ((matches!(prefix(2), 36 | 38 | 39) || (300..=305).contains(&prefix(3)))
                    && (14..=19).contains(&len))
        }
        Some(6) => (16..=19).contains(&len) || (13..=19).contains(&len) && prefix(2) == 67,
        _ => false,
    };
    // Separators, if any, must be of one kind (4242 4242 4242 4242, not 4242-4242 4242-4242).
    let separators: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_digit()).collect();
    let consistent = separators.windows(2).all(|w| w.first() == w.last());
    brand && consistent && luhn(&digits)
}

fn ssn(text: &str) -> bool {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let (Some(area), Some(group), Some(serial)) =
        (digits.get(..3), digits.get(3..5), digits.get(5..))
    else {
        return false;
    };
    let area: u32 = area.parse().unwrap_or(0);
    digits.len() == 9 && area != 0 && area != 666 && area < 900 && group != "00" && serial != "0000"
}

/// `2024-03-15`, `15.03.2024`, `3/4/88`: dates, which phone patterns would otherwise take.
fn date_like(text: &str) -> bool {
    let groups: Vec<&str> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let years = |g: &&str| g.len() == 4 && (g.starts_with("19") || g.starts_with("20"));
    groups.len() == 3
        && (groups.first().is_some_and(years) || groups.last().is_some_and(years))
        && groups.iter().all(|g| g.len() <= 4)
}

/// Words that name a number as an identifier (`Part no.`, `order #`, `tracking:`): such
/// numbers are not phone numbers, whatever their shape.
const IDENTIFIER_LABELS: &[&str] = &[
    "part",
    "order",
    "invoice",
    "ref",
    "reference",
    "sku",
    "serial",
    "lot",
    "item",
    "ticket",
    "case",
    "tracking",
    "acct",
    "id",
    "po",
    "batch",
    "model",
    "isbn",
    "issn",
    "build",
    "version",
    "policy",
    "claim",
    "boleto",
    "iban",
    "bic",
    "swift",
    "routing",
    "parcel",
    "shipment",
    "container",
    "booking",
    "confirmation",
    "reservation",
    "receipt",
    "transaction",
    "txn",
    "license",
    "licence",
    "vin",
    "imei",
    "mac",
];

/// Words that name a dotted number as a version or a section, not an address.
const VERSION_LABELS: &[&str] = &[
    "version",
    "ver",
    "v",
    "firmware",
    "release",
    "build",
    "section",
    "chapter",
    "oid",
    "rfc",
    "kernel",
    "patch",
    "rev",
    "revision",
    "sdk",
    "api",
    "update",
    "clause",
    "article",
    "paragraph",
];

/// Whether one of the last `words` words before a value is in `labels`.
fn labelled(head: &str, labels: &[&str], words: usize) -> bool {
    let tail: Vec<char> = head.chars().rev().take(48).collect();
    let tail: String = tail.into_iter().rev().collect::<String>().to_lowercase();
    tail.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .rev()
        .take(words)
        .any(|word| labels.contains(&word))
}

/// Whether a number continues into a longer code: digits or letters joined by a separator on
/// either side (`310-447-2289-KX`, `34191.79001 01043.510047`).
fn part_of_a_code(head: &str, after: &str) -> bool {
    let joined = |mut chars: std::str::Chars<'_>, reverse: bool| {
        let next = |chars: &mut std::str::Chars<'_>| {
            if reverse {
                chars.next_back()
            } else {
                chars.next()
            }
        };
        match next(&mut chars) {
            Some('-' | '/' | '_' | '.') => next(&mut chars).is_some_and(char::is_alphanumeric),
            Some(' ') => next(&mut chars).is_some_and(|c| c.is_ascii_digit()),
            _ => false,
        }
    };
    joined(head.chars(), true) || joined(after.chars(), false)
}

/// Whether an assigned value reads like a secret rather than a stand-in (`changeme`,
/// `<your password>`, `${VAR}`), a number, a date or a version.
fn credential(text: &str) -> bool {
    let len = text.chars().count();
    if !(6..=4096).contains(&len) {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    let stand_in = [
        "xxx",
        "***",
        "...",
        "redacted",
        "your",
        "example",
        "changeme",
        // Stand-in words ("placehold" also finds its longer forms).
        "placehold",
        "${",
        "{{",
    ]
    .iter()
    .any(|p| lower.contains(p));
    let numeric = text
        .chars()
        .all(|c| c.is_ascii_digit() || ".:-/+TZ".contains(c));
    let version = lower
        .strip_prefix('v')
        .unwrap_or(&lower)
        .split(['.', '-'])
        .take(2)
        .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()));
    let kinds = [
        text.chars().any(|c| c.is_ascii_lowercase()),
        text.chars().any(|c| c.is_ascii_uppercase()),
        text.chars().any(|c| c.is_ascii_digit()),
        text.chars().any(|c| !c.is_ascii_alphanumeric()),
    ]
    .iter()
    .filter(|kind| **kind)
    .count();
    // `AUTH0_CLIENT_SECRET`, `password_hash`: names of variables and columns, not values;
    // `CHAR(60)`: a column type.
    let identifier = text.contains('_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && (text.chars().all(|c| !c.is_ascii_lowercase())
            || text.chars().all(|c| !c.is_ascii_uppercase()));
    let column_type = text.split_once('(').is_some_and(|(name, rest)| {
        name.chars().all(|c| c.is_ascii_alphabetic())
            && rest
                .trim_end_matches(')')
                .chars()
                .all(|c| c.is_ascii_digit() || c == ',')
    });
    !stand_in
        && !numeric
        && !version
        && !identifier
        && !column_type
        && (kinds >= 3 || (kinds == 2 && len >= 10 && entropy(text) >= 3.0))
}

fn ipv4(text: &str, head: &str, after: &str) -> bool {
    let before = head.chars().next_back();
    // v1.2.3.4, 10.0.19041.1.2: part of a longer dotted version, not an address.
    let version_like = before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '.')
        || after
            .strip_prefix('.')
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()));
    !version_like && !labelled(head, VERSION_LABELS, 3) && text.parse::<Ipv4Addr>().is_ok()
}

fn ipv6(text: &str) -> bool {
    text.split(':').filter(|g| !g.is_empty()).count() >= 3 && text.parse::<Ipv6Addr>().is_ok()
}

fn phone(text: &str) -> bool {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_digit).collect();
    let national = match (digits.len(), digits.split_first()) {
        (10, _) => digits.as_slice(),
        (11, Some((b'1', rest))) => rest,
        _ => return false,
    };
    national.first().is_some_and(|d| *d >= b'2') && national.get(3).is_some_and(|d| *d >= b'2')
}

fn jwt(text: &str) -> bool {
    let header = text.split('.').next().unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        .is_some_and(|json| json.get("alg").is_some())
}

/// Shannon entropy in bits per character.
pub(crate) fn entropy(text: &str) -> f64 {
    let mut counts = [0u32; 256];
    for byte in text.bytes() {
        if let Some(count) = counts.get_mut(usize::from(byte)) {
            *count += 1;
        }
    }
    let len = text.len() as f64;
    counts
        .iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = f64::from(*c) / len;
            -p * p.log2()
        })
        .sum()
}

impl Confirm {
    /// Whether the candidate `text` (with its neighbourhood) is a real finding.
    /// Whether the candidate `text`, after `head` and before `after`, is a real finding.
    pub(crate) fn holds(self, text: &str, head: &str, after: &str) -> bool {
        match self {
            Self::Pattern => true,
            Self::Card => card(text),
            Self::Ssn => ssn(text),
            Self::Ipv4 => ipv4(text, head, after),
            Self::Ipv6 => ipv6(text),
            Self::Phone => {
                phone(text) && !labelled(head, IDENTIFIER_LABELS, 2) && !part_of_a_code(head, after)
            }
            Self::Email => !after.starts_with([':', '/']),
            Self::Digits(min, max) => {
                (min..=max).contains(&text.bytes().filter(u8::is_ascii_digit).count())
                    && !date_like(text)
                    && !labelled(head, IDENTIFIER_LABELS, 2)
                    && !part_of_a_code(head, after)
            }
            Self::Credential => credential(text),
            Self::Jwt => jwt(text),
            Self::Entropy(bits) => entropy(text) >= bits,
        }
    }
}
