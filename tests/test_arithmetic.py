import re

from nbhelpers import arithmetic


def test_every_answer_is_correct():
    probs = list(arithmetic.problems(seed=7, n=5000))
    assert {p.kind for p in probs} == set(arithmetic.GENERATORS)
    for p in probs:
        assert arithmetic.check(p), p
        # the numbers the expression uses all appear in the question
        for number in re.findall(r"\d+", p.expression.replace("//", "/")):
            if number != "100":  # percentages divide by 100, which the question writes as %
                assert number in p.question, (number, p)
        assert p.answer >= 0


def test_check_catches_a_wrong_answer():
    p = next(arithmetic.problems(seed=1, n=1))
    wrong = arithmetic.Problem(p.kind, p.question, p.solution, p.expression, p.answer + 1)
    assert not arithmetic.check(wrong)


def test_deterministic_from_seed():
    a = [p.text() for p in arithmetic.problems(seed=3, n=50)]
    b = [p.text() for p in arithmetic.problems(seed=3, n=50)]
    c = [p.text() for p in arithmetic.problems(seed=4, n=50)]
    assert a == b and a != c


def test_document_and_instruction_shapes():
    p = next(arithmetic.problems(seed=0, n=1))
    assert p.text().startswith("問題: ") and p.text().endswith(f"答え: {p.answer}")
    pair = p.instruction()
    assert pair["prompt"] == p.question and pair["target"].endswith(f"答えは{p.answer}です。")
