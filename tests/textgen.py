"""Pictures with text in them, rendered with Pillow and a CJK font from Debian
(fonts-wqy-microhei or fonts-noto-cjk; ``.ci/run`` installs it): pages, signs pasted on real
photos, screenshot-like screens; English and Chinese; several sizes, colours and slight
rotations. Each picture's phrase appears in no other picture, so a query for it has exactly one
right answer."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = [Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
         Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
         Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc")]

EN_WORDS = ["gate", "wifi", "password", "invoice", "receipt", "platform", "exit", "parking",
            "meeting", "room", "coffee", "menu", "ticket", "boarding", "pharmacy", "museum",
            "library", "station", "airport", "bakery", "garden", "harbour", "market", "bridge",
            "office", "hotel", "theatre", "cinema", "bank", "school"]
ZH_WORDS = ["发票", "收据", "停车场", "入口", "出口", "会议室", "密码", "无线网络", "电话",
            "地址", "欢迎光临", "营业时间", "禁止吸烟", "火车站", "机场", "登机口", "餐厅",
            "菜单", "价格", "优惠", "咖啡", "图书馆", "医院", "学校", "银行", "超市", "地铁",
            "公交", "出租车", "博物馆"]


def cjk_font() -> Path | None:
    return next((f for f in FONTS if f.is_file()), None)


@dataclass(frozen=True)
class TextPicture:
    path: Path
    phrase: str
    language: str
    style: str


def phrases(n: int, language: str, seed: int) -> list[str]:
    """``n`` phrases, none contained in another: two words and a code ("gate wifi B12",
    "发票 登机口 37")."""
    rng = random.Random(seed)
    words = EN_WORDS if language == "en" else ZH_WORDS
    out: list[str] = []
    while len(out) < n:
        a, b = rng.sample(words, 2)
        code = (f"{rng.choice('ABCDEFGHJKLMNPRSTUVWXYZ')}{rng.randint(10, 99)}"
                if language == "en" else f"{rng.randint(100, 999)}")
        phrase = f"{a} {b} {code}"
        if all(code not in p for p in out):
            out.append(phrase)
    return out


def _font(size: int) -> ImageFont.FreeTypeFont:
    font = cjk_font()
    if font is None:
        raise RuntimeError("no CJK font: apt-get install fonts-wqy-microhei")
    return ImageFont.truetype(str(font), size)


def page(phrase: str, rng: random.Random) -> Image.Image:
    """A document or slide: the phrase on a plain background, maybe tilted a little."""
    bg = rng.choice([(255, 255, 255), (250, 246, 230), (30, 40, 60), (230, 240, 255)])
    fg = (20, 20, 20) if sum(bg) > 380 else (245, 245, 245)
    img = Image.new("RGB", (rng.choice([800, 1024, 1280]), rng.choice([600, 768, 900])), bg)
    draw = ImageDraw.Draw(img)
    size = rng.choice([28, 36, 48, 64])
    draw.text((rng.randint(30, 120), rng.randint(60, 300)), phrase, fill=fg, font=_font(size))
    draw.text((40, img.height - 80), "page 1 / 3", fill=fg, font=_font(20))
    angle = rng.uniform(-4, 4)
    return img.rotate(angle, expand=False, fillcolor=bg, resample=Image.Resampling.BICUBIC)


def sign(phrase: str, photo: Image.Image, rng: random.Random) -> Image.Image:
    """A sign with the phrase, pasted into a real photo."""
    base = photo.convert("RGB").resize((640, 480))
    font = _font(rng.choice([30, 38, 46]))
    left, top, right, bottom = font.getbbox(phrase)
    board = Image.new("RGB", (right - left + 40, bottom - top + 30),
                      rng.choice([(250, 250, 250), (20, 90, 40), (200, 30, 30), (20, 40, 140)]))
    colour = (20, 20, 20) if sum(board.getpixel((0, 0))) > 600 else (255, 255, 255)  # type: ignore[arg-type]
    ImageDraw.Draw(board).text((20 - left, 15 - top), phrase, fill=colour, font=font)
    board = board.rotate(rng.uniform(-3, 3), expand=True, fillcolor=(128, 128, 128))
    x = rng.randint(0, max(0, base.width - board.width))
    y = rng.randint(0, max(0, base.height - board.height))
    base.paste(board, (x, y))
    return base


def screen(phrase: str, rng: random.Random) -> Image.Image:
    """A phone screenshot: a title bar, some lines of interface text, the phrase."""
    img = Image.new("RGB", (720, 1280), (246, 246, 246))
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, 720, 120), fill=rng.choice([(33, 150, 243), (76, 175, 80),
                                                       (55, 55, 55)]))
    draw.text((30, 40), "12:41", fill=(255, 255, 255), font=_font(32))
    for n, line in enumerate(["Settings", "Notifications", "Display"]):
        draw.text((40, 200 + 90 * n), line, fill=(90, 90, 90), font=_font(30))
    draw.text((40, 520 + rng.randint(0, 300)), phrase, fill=(10, 10, 10),
              font=_font(rng.choice([32, 40])))
    return img


def make_corpus(folder: Path, per_language: int, photos: list[Path], seed: int = 0
                ) -> list[TextPicture]:
    """``per_language`` pictures per language, cycling through the three styles."""
    rng = random.Random(seed)
    made: list[TextPicture] = []
    folder.mkdir(parents=True, exist_ok=True)
    for language in ("en", "zh"):
        for n, phrase in enumerate(phrases(per_language, language, seed + len(language))):
            style = ("page", "sign", "screen")[n % 3]
            if style == "page":
                img = page(phrase, rng)
            elif style == "sign":
                with Image.open(photos[n % len(photos)]) as photo:
                    img = sign(phrase, photo, rng)
            else:
                img = screen(phrase, rng)
            path = folder / f"{language}-{style}-{n:03d}.jpg"
            img.save(path, quality=90)
            made.append(TextPicture(path, phrase, language, style))
    return made
