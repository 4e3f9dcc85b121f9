"""Listing copy the ListingRVA sandbox writes: templated, deterministic, in the marketplace's language.

ListingRVA's listing request has no language or marketplace field (contract §6); the plugin states
the language in ``targetAudience`` (e.g. "hikers; write in German", or just "write in German"),
the one free-text field a real model would read, and the sandbox reads it back from there. English
is the default; German, French, Spanish, Italian and Japanese have templates of their own (other
languages fall back to English, as a sandbox that cannot translate should).

The copy keeps Amazon's limits so a compliance check passes on it: title <= 200 characters (150 on
other platforms), at most 5 bullets of <= 500 characters, backend keywords <= 249 bytes (UTF-8, as
Amazon counts them). For ``SandboxConfig.noncompliant_asins`` the title starts with promotional
wording ("Best Seller - Free Shipping") that Amazon forbids.

Contract: docs/providers/listingrva.md (cited below as "contract §N").
"""

from __future__ import annotations

import re
from typing import Any

HTML_PLATFORMS = {"shopify", "woocommerce", "bigcommerce", "etsy"}
PROMOTIONAL = "Best Seller - Free Shipping"
TITLE_LIMIT = {"amazon": 200}
DEFAULT_TITLE_LIMIT = 150
BULLET_LIMIT = 500
KEYWORD_BYTES = 249
STOPWORDS = {"with", "and", "for", "the", "set", "from", "into"}

# language names as a persona may state them -> template key
LANGUAGE_NAMES = {
    "german": "de",
    "deutsch": "de",
    "french": "fr",
    "français": "fr",
    "francais": "fr",
    "spanish": "es",
    "español": "es",
    "espanol": "es",
    "italian": "it",
    "italiano": "it",
    "japanese": "ja",
    "日本語": "ja",
}

TEMPLATES: dict[str, dict[str, Any]] = {
    "en": {
        "tone": {"professional": "Reliable", "casual": "Easy", "luxury": "Exquisite"},
        "audience": "everyday shoppers",
        "title": "{title} | {adjective} {category}",
        "bullets": [
            "{ADJECTIVE} {CATEGORY}: {title}, made for {audience}",
            "{KEYWORD}: designed around {keyword} for {platform} shoppers",
            "EASY CARE: wipe clean, store anywhere, built to last",
            "WHAT YOU GET: {title}, ready to use out of the box",
            "OUR PROMISE: questions answered within a day",
        ],
        "description": "{title} is a {adjective_lower} pick in {category}. "
        "Built for {audience}, it covers {keywords}.",
        "keywords": ["gift", "quality", "durable", "everyday"],
    },
    "de": {
        "tone": {"professional": "Zuverlässig", "casual": "Praktisch", "luxury": "Exklusiv"},
        "audience": "den Alltag",
        "title": "{title} – {adjective} für {category}",
        "bullets": [
            "{ADJECTIVE} UND LANGLEBIG: {title}, gemacht für {audience}",
            "{KEYWORD}: rund um {keyword} entwickelt, ideal für Kunden auf {platform}",
            "EINFACHE PFLEGE: leicht zu reinigen und platzsparend zu verstauen",
            "LIEFERUMFANG: {title}, sofort einsatzbereit",
            "UNSER VERSPRECHEN: Fragen beantworten wir innerhalb eines Tages",
        ],
        "description": "{title} ist eine {adjective_lower}e Wahl für {category}. Entwickelt für {audience}, "
        "überzeugt es durch {keywords}.",
        "keywords": ["geschenk", "hochwertig", "langlebig", "alltag"],
    },
    "fr": {
        "tone": {"professional": "Fiable", "casual": "Pratique", "luxury": "Raffiné"},
        "audience": "le quotidien",
        "title": "{title} – {adjective} pour {category}",
        "bullets": [
            "{ADJECTIVE} ET DURABLE : {title}, conçu pour {audience}",
            "{KEYWORD} : pensé autour de {keyword} pour les clients {platform}",
            "ENTRETIEN FACILE : se nettoie en un instant et se range partout",
            "CONTENU DU COLIS : {title}, prêt à l'emploi",
            "NOTRE ENGAGEMENT : une réponse à vos questions sous 24 heures",
        ],
        "description": "{title} est un choix {adjective_lower} dans la catégorie {category}. Conçu pour "
        "{audience}, il se distingue par {keywords}.",
        "keywords": ["cadeau", "qualité", "durable", "quotidien"],
    },
    "es": {
        "tone": {"professional": "Fiable", "casual": "Práctico", "luxury": "Exclusivo"},
        "audience": "el día a día",
        "title": "{title} – {adjective} para {category}",
        "bullets": [
            "{ADJECTIVE} Y RESISTENTE: {title}, pensado para {audience}",
            "{KEYWORD}: diseñado en torno a {keyword} para clientes de {platform}",
            "FÁCIL CUIDADO: se limpia en segundos y se guarda en cualquier lugar",
            "CONTENIDO DEL PAQUETE: {title}, listo para usar",
            "NUESTRO COMPROMISO: respondemos a sus preguntas en un día",
        ],
        "description": "{title} es un producto {adjective_lower} en {category}. Pensado para {audience}, "
        "destaca por {keywords}.",
        "keywords": ["regalo", "calidad", "resistente", "diario"],
    },
    "it": {
        "tone": {"professional": "Affidabile", "casual": "Pratico", "luxury": "Esclusivo"},
        "audience": "la vita di tutti i giorni",
        "title": "{title} – {adjective} per {category}",
        "bullets": [
            "{ADJECTIVE} E RESISTENTE: {title}, pensato per {audience}",
            "{KEYWORD}: progettato intorno a {keyword} per i clienti {platform}",
            "FACILE DA PULIRE: si pulisce in un attimo e si ripone ovunque",
            "CONTENUTO DELLA CONFEZIONE: {title}, pronto all'uso",
            "LA NOSTRA PROMESSA: rispondiamo alle vostre domande entro un giorno",
        ],
        "description": "{title} è un prodotto {adjective_lower} nella categoria {category}. Pensato per "
        "{audience}, si distingue per {keywords}.",
        "keywords": ["regalo", "qualità", "resistente", "quotidiano"],
    },
    "ja": {
        "tone": {"professional": "高品質", "casual": "便利", "luxury": "上質"},
        "audience": "毎日の暮らし",
        "title": "【{adjective}】{title}（{category}）",
        "bullets": [
            "【{adjective}】{title}は{audience}のために作られました",
            "【{keyword}】{keyword}を考えて設計、{platform}のお客様に最適です",
            "【お手入れ簡単】さっと拭くだけで清潔に保てます",
            "【セット内容】{title}、届いてすぐにお使いいただけます",
            "【安心サポート】ご質問には1日以内にお答えします",
        ],
        "description": "{title}は{category}の{adjective}な一品です。"
        "{audience}のために作られ、{keywords}が魅力です。",
        "keywords": ["ギフト", "高品質", "丈夫", "日常"],
        "separator": "、",
    },
}

CATEGORIES: dict[str, dict[str, str]] = {
    "de": {
        "home & kitchen": "Küche & Haushalt",
        "office products": "Bürobedarf",
        "electronics": "Elektronik",
        "sports & outdoors": "Sport & Freizeit",
        "grocery & gourmet food": "Lebensmittel & Getränke",
    },
    "fr": {
        "home & kitchen": "Cuisine & Maison",
        "office products": "Fournitures de bureau",
        "electronics": "High-Tech",
        "sports & outdoors": "Sports & Loisirs",
        "grocery & gourmet food": "Épicerie",
    },
    "es": {
        "home & kitchen": "Hogar y cocina",
        "office products": "Oficina y papelería",
        "electronics": "Electrónica",
        "sports & outdoors": "Deportes y aire libre",
        "grocery & gourmet food": "Alimentación y bebidas",
    },
    "it": {
        "home & kitchen": "Casa e cucina",
        "office products": "Cancelleria e prodotti per ufficio",
        "electronics": "Elettronica",
        "sports & outdoors": "Sport e tempo libero",
        "grocery & gourmet food": "Alimentari e cura della casa",
    },
    "ja": {
        "home & kitchen": "ホーム＆キッチン",
        "office products": "文房具・オフィス用品",
        "electronics": "家電＆カメラ",
        "sports & outdoors": "スポーツ＆アウトドア",
        "grocery & gourmet food": "食品・飲料",
    },
}
DEFAULT_CATEGORY = {
    "en": "Everyday Essentials",
    "de": "den Alltag",
    "fr": "la maison",
    "es": "el hogar",
    "it": "la casa",
    "ja": "日用品",
}


def language_of(payload: dict[str, Any]) -> str:
    """The template key for the language the request's persona states (English when none is)."""
    text = " ".join(str(payload.get(k) or "") for k in ("targetAudience", "seedKeywords")).lower()
    for name, key in LANGUAGE_NAMES.items():
        if re.search(rf"(?<!\w){re.escape(name)}(?!\w)", text):
            return key
    return "en"


def listing_copy(
    product: dict[str, Any], payload: dict[str, Any], *, promotional: bool = False
) -> dict[str, Any]:
    """Copy that differs per product (its title, category and the seed keywords) in the language
    the request asks for, cut to the marketplace's limits."""
    lang = language_of(payload)
    t = TEMPLATES[lang]
    title, platform, tone = product["title"], payload["platform"], payload["tone"]
    raw_category = product.get("category") or ""
    category = (
        CATEGORIES.get(lang, {}).get(raw_category.strip().lower(), raw_category) or DEFAULT_CATEGORY[lang]
    )
    seeds = [k.strip() for k in (payload.get("seedKeywords") or "").split(",") if k.strip()]
    words = [
        w.lower() for w in re.findall(r"[A-Za-z0-9]+", title) if len(w) > 2 and w.lower() not in STOPWORDS
    ]
    keywords = list(dict.fromkeys([*seeds, *t["keywords"], *words, category.lower()]))
    adjective = t["tone"][tone]
    audience = _persona(payload.get("targetAudience")) or t["audience"]
    fields = {
        "title": title,
        "category": category,
        "adjective": adjective,
        "adjective_lower": adjective.lower(),
        "ADJECTIVE": adjective.upper(),
        "CATEGORY": category.upper(),
        "audience": audience,
        "platform": platform,
        "keywords": t.get("separator", ", ").join(keywords[:4]),
    }
    head = t["title"].format(**fields) + (f" - {', '.join(seeds[:3])}" if seeds else "")
    bullets = [t["bullets"][0].format(**fields)]
    topics = (seeds or words or keywords)[:2]
    bullets += [t["bullets"][1].format(**fields, keyword=k, KEYWORD=k.upper()) for k in topics]
    bullets += [b.format(**fields) for b in t["bullets"][2:]]
    description = t["description"].format(**fields)
    if promotional:
        head = f"{PROMOTIONAL} | {head}"
    full = {
        "title": head[: TITLE_LIMIT.get(platform, DEFAULT_TITLE_LIMIT)],
        "bullets": [b[:BULLET_LIMIT] for b in bullets[:5]],
        "description": f"<p>{description}</p>" if platform in HTML_PLATFORMS else description,
        "keywords": _within_bytes(keywords, KEYWORD_BYTES),
    }
    if platform == "general":  # a comma string exercises the documented alternative (contract §7)
        full["keywords"] = ", ".join(full["keywords"])
    return {k: v for k, v in full.items() if k in payload["components"]}


def _persona(text: str | None) -> str:
    """The persona without the plugin's language note (that part is for the model, not the copy)."""
    return re.sub(r"(^|;)\s*write in [^;]*", "", text or "").strip(" ;")


def _within_bytes(keywords: list[str], limit: int) -> list[str]:
    """As many keywords as fit in ``limit`` UTF-8 bytes, however they are joined (", " is longest)."""
    kept: list[str] = []
    for k in keywords:
        if len(", ".join([*kept, k]).encode()) > limit:
            break
        kept.append(k)
    return kept
