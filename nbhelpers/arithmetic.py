"""Japanese arithmetic word problems with worked answers (the report's 計算データ), deterministic from a seed."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction

ITEMS = [("りんご", "個"), ("みかん", "個"), ("鉛筆", "本"), ("ノート", "冊"), ("シール", "枚"), ("花", "本"),
         ("クッキー", "枚"), ("卵", "個"), ("風船", "個"), ("切手", "枚")]
PEOPLE = ["太郎さん", "花子さん", "先生", "お母さん", "ゆきさん", "けんたさん", "おじいさん", "店員さん"]
CONTAINERS = [("箱", "箱"), ("袋", "袋"), ("かご", "かご")]


@dataclass(frozen=True)
class Problem:
    """One word problem: the question, a worked solution, the expression it rests on and the answer."""

    kind: str
    question: str
    solution: str
    expression: str  # Python arithmetic whose value is the answer (used to check every answer)
    answer: int

    def text(self) -> str:
        """The problem as one pre-training document."""
        return f"問題: {self.question}\n解き方: {self.solution}\n答え: {self.answer}"

    def instruction(self) -> dict[str, str]:
        """The problem as an instruction pair ({"prompt", "target"})."""
        return {"prompt": self.question, "target": f"{self.solution} 答えは{self.answer}です。"}


def _add(r: random.Random) -> Problem:
    who, (item, unit) = r.choice(PEOPLE), r.choice(ITEMS)
    a, b = r.randint(2, 999), r.randint(2, 999)
    q = f"{who}は{item}を{a}{unit}持っています。さらに{b}{unit}もらいました。全部で何{unit}になりましたか？"
    return Problem("add", q, f"{a} + {b} = {a + b}。", f"{a}+{b}", a + b)


def _sub(r: random.Random) -> Problem:
    who, (item, unit) = r.choice(PEOPLE), r.choice(ITEMS)
    a = r.randint(10, 999)
    b = r.randint(1, a - 1)
    q = f"{item}が{a}{unit}ありました。{who}が{b}{unit}使いました。残りは何{unit}ですか？"
    return Problem("sub", q, f"{a} - {b} = {a - b}。", f"{a}-{b}", a - b)


def _mul(r: random.Random) -> Problem:
    (item, unit), (box, _) = r.choice(ITEMS), r.choice(CONTAINERS)
    a, b = r.randint(2, 40), r.randint(2, 30)
    q = f"1{box}に{item}が{a}{unit}入っています。{b}{box}では{item}は何{unit}ですか？"
    return Problem("mul", q, f"{a} × {b} = {a * b}。", f"{a}*{b}", a * b)


def _div(r: random.Random) -> Problem:
    (item, unit) = r.choice(ITEMS)
    people, each = r.randint(2, 12), r.randint(2, 30)
    total = people * each
    q = f"{item}が{total}{unit}あります。{people}人で同じ数ずつ分けると、1人何{unit}になりますか？"
    return Problem("div", q, f"{total} ÷ {people} = {each}。", f"{total}//{people}", each)


def _change(r: random.Random) -> Problem:
    (item, unit) = r.choice(ITEMS)
    price, count = r.randrange(30, 500, 10), r.randint(2, 9)
    cost = price * count
    paid = next(p for p in (500, 1000, 2000, 5000, 10000) if p >= cost)
    q = f"1{unit}{price}円の{item}を{count}{unit}買い、{paid}円を払いました。おつりはいくらですか？"
    sol = f"代金は {price} × {count} = {cost}円。おつりは {paid} - {cost} = {paid - cost}円。"
    return Problem("change", q, sol, f"{paid}-{price}*{count}", paid - cost)


def _speed(r: random.Random) -> Problem:
    speed, hours = r.randint(3, 90), r.randint(2, 9)
    q = f"時速{speed}kmで{hours}時間進むと、何km進みますか？"
    return Problem("speed", q, f"道のり = 速さ × 時間 = {speed} × {hours} = {speed * hours}km。",
                   f"{speed}*{hours}", speed * hours)


def _percent(r: random.Random) -> Problem:
    price = r.randrange(100, 10000, 100)
    pct = r.choice([10, 20, 25, 30, 40, 50])
    off = int(Fraction(price * pct, 100))
    q = f"{price}円の品物が{pct}%引きで売られています。値段はいくらですか？"
    sol = f"値引きは {price} × {pct} ÷ 100 = {off}円。値段は {price} - {off} = {price - off}円。"
    return Problem("percent", q, sol, f"{price}-{price}*{pct}//100", price - off)


def _two_step(r: random.Random) -> Problem:
    who, (item, unit) = r.choice(PEOPLE), r.choice(ITEMS)
    a, b = r.randint(10, 200), r.randint(2, 9)
    c = r.randint(1, a)  # never more than was there, so the answer stays positive
    q = f"{who}は{item}を{a}{unit}持っていました。その{b}倍を買い足し、{c}{unit}を友だちにあげました。今は何{unit}ありますか？"
    total = a + a * b - c
    sol = f"買い足したのは {a} × {b} = {a * b}{unit}。{a} + {a * b} - {c} = {total}。"
    return Problem("two_step", q, sol, f"{a}+{a}*{b}-{c}", total)


GENERATORS: dict[str, Callable[[random.Random], Problem]] = {
    "add": _add, "sub": _sub, "mul": _mul, "div": _div, "change": _change,
    "speed": _speed, "percent": _percent, "two_step": _two_step,
}


def problems(seed: int = 0, n: int | None = None) -> Iterator[Problem]:
    """Yield `n` problems (forever when None), the same sequence for the same seed."""
    r = random.Random(seed)
    kinds = sorted(GENERATORS)
    i = 0
    while n is None or i < n:
        yield GENERATORS[r.choice(kinds)](r)
        i += 1


def check(problem: Problem) -> bool:
    """True when the stated answer equals the expression's value and ends the solution."""
    value = eval(problem.expression, {"__builtins__": {}}, {})  # expressions are built above from ints only
    return value == problem.answer and f"= {problem.answer}" in problem.solution
