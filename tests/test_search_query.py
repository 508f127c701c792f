"""The face search language (mtfap.search.query) and ranking by a query (mtfap.search.rank)."""

import re
from pathlib import Path

import numpy as np
import pytest

from mtfap.attributes import CELEBA_ATTRIBUTES
from mtfap.search.query import (
    STOP_WORDS,
    Condition,
    Query,
    parse_query,
    vocabulary,
    vocabulary_markdown,
)
from mtfap.search.rank import rank_query

ROOT = Path(__file__).resolve().parents[1]


def test_old_man_wearing_glasses_asks_for_male_not_young_with_eyeglasses():
    query = parse_query("old man wearing glasses")
    assert query.as_dict() == {"Male": True, "Young": False, "Eyeglasses": True}
    assert [c.words for c in query.conditions] == ["old", "man", "glasses"]


@pytest.mark.parametrize("text", [
    "Male & ~Young & Eyeglasses", "Male & !Young & Eyeglasses", "male and not young and glasses",
    "Male ~Young Eyeglasses", "male, -young, eyeglasses", "elderly gentleman with spectacles",
    "a photo of a senior guy who has eyeglasses",
])
def test_explicit_form_and_words_give_the_same_conditions(text):
    assert parse_query(text).as_dict() == {"Male": True, "Young": False, "Eyeglasses": True}


@pytest.mark.parametrize("text, expected", [
    ("without glasses", {"Eyeglasses": False}),
    ("no beard", {"No_Beard": True}),
    ("bearded", {"No_Beard": False}),
    ("not clean-shaven", {"No_Beard": False}),
    ("not smiling", {"Smiling": False}),
    ("non-smiling", {"Smiling": False}),
    ("not young", {"Young": False}),
    ("not old", {"Young": True}),
    ("~Young", {"Young": False}),
    ("-Eyeglasses", {"Eyeglasses": False}),
    ("!Smiling", {"Smiling": False}),
    ("woman without a hat, not wearing earrings", {"Male": False, "Wearing_Hat": False,
                                                   "Wearing_Earrings": False}),
    ("not not smiling", {"Smiling": True}),
    ("man who isn't smiling", {"Male": True, "Smiling": False}),
])
def test_a_negation_turns_the_next_attribute_phrase_around(text, expected):
    assert parse_query(text).as_dict() == expected


def test_a_hyphen_inside_a_word_joins_and_before_a_word_negates():
    assert parse_query("clean-shaven man -glasses").as_dict() == {
        "No_Beard": True, "Male": True, "Eyeglasses": False}


def test_the_condition_keeps_the_words_that_asked_for_it_as_typed():
    query = parse_query("Woman WITHOUT a Hat, ~Smiling")
    assert [c.words for c in query.conditions] == ["Woman", "WITHOUT a Hat", "~Smiling"]


@pytest.mark.parametrize("attribute", CELEBA_ATTRIBUTES)
def test_every_attribute_is_reached_by_its_name_in_any_case_with_or_without_underscores(
        attribute):
    spellings = [attribute, attribute.lower(), attribute.upper(), attribute.replace("_", " "),
                 attribute.replace("_", "")]
    for spelling in spellings:
        assert parse_query(spelling).as_dict() == {attribute: True}, spelling


@pytest.mark.parametrize("attribute", CELEBA_ATTRIBUTES)
def test_the_explicit_form_parses_back_to_the_same_conditions(attribute):
    for present in (True, False):
        query = Query((Condition(attribute, present), Condition("Male", True)))
        if attribute == "Male":
            query = Query((Condition(attribute, present),))
        assert parse_query(str(query)).as_dict() == query.as_dict()


def test_every_attribute_is_reached_by_at_least_one_word_of_the_vocabulary():
    assert {t.attribute for t in vocabulary()} == set(CELEBA_ATTRIBUTES)


def test_every_word_of_the_vocabulary_parses_to_its_own_meaning():
    for term in vocabulary():
        assert parse_query(term.phrase).as_dict() == {term.attribute: term.present}, term.phrase


def test_no_phrase_of_the_vocabulary_has_two_meanings_or_is_a_stop_word():
    phrases = [t.phrase for t in vocabulary()]
    assert len(phrases) == len(set(phrases))
    assert not set(phrases) & set(STOP_WORDS)


@pytest.mark.parametrize("text, expected", [
    ("man woman", r"contradictory query 'man woman': 'man' asks for Male and 'woman' for ~Male"),
    ("smiling not smiling", r"'smiling' asks for Smiling and 'not smiling' for ~Smiling"),
    ("old man with glases", r"unknown word 'glases' .*did you mean 'glasses'"),
    ("man with big ears", r"'big' is only known inside phrases: 'big lips', 'big nose'"),
    ("", r"empty query"),
    ("   ", r"empty query"),
    ("a photo of a person", r"names no attribute"),
    ("man or woman", r"'or' is not supported"),
    ("man | woman", r"'\|' is not supported"),
    ("(man & young)", r"parentheses are not supported"),
    ("smiling without", (r"'without' at the end of 'smiling without' is not followed by an "
                         r"attribute")),
    ("~ & Male", r"'~' in '~ & Male' must be followed by an attribute, not '&'"),
    ("man + glasses", r"unexpected character '\+' at position 5"),
])
def test_a_malformed_query_fails_with_a_one_line_message_that_says_what_is_wrong(text, expected):
    with pytest.raises(ValueError, match=expected) as raised:
        parse_query(text)
    assert "\n" not in str(raised.value)


def test_same_condition_twice_is_kept_once():
    assert parse_query("man male guy").conditions == (Condition("Male", True, "man"),)


def test_an_attribute_the_index_does_not_predict_is_an_error_naming_it():
    with pytest.raises(ValueError, match=r"'bald' asks for Bald, which the index does not "
                                         r"predict; it predicts: Male, Young"):
        parse_query("bald man", attributes=("Male", "Young"))
    assert parse_query("old man", attributes=("Male", "Young")).as_dict() == {
        "Young": False, "Male": True}


def test_an_attribute_outside_celeba_is_reached_by_its_name():
    assert parse_query("Freckles & ~Male", attributes=("Male", "Freckles")).as_dict() == {
        "Freckles": True, "Male": False}


def test_log_score_is_the_sum_of_log_p_and_log_one_minus_p_of_the_conditions():
    rng = np.random.default_rng(0)
    probabilities = rng.random((50, len(CELEBA_ATTRIBUTES)))
    query = parse_query("old man wearing glasses")
    column = {a: j for j, a in enumerate(CELEBA_ATTRIBUTES)}
    expected = (np.log(probabilities[:, column["Male"]])
                + np.log(1 - probabilities[:, column["Young"]])
                + np.log(probabilities[:, column["Eyeglasses"]]))
    np.testing.assert_allclose(query.log_score(probabilities, CELEBA_ATTRIBUTES), expected)


def test_log_score_clips_certain_probabilities_so_one_failed_condition_stays_finite():
    query = parse_query("man smiling")
    scores = query.log_score(np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), ["Male", "Smiling"])
    np.testing.assert_allclose(scores, [np.log(1e-6) + np.log1p(-1e-6), 2 * np.log(1e-6),
                                        2 * np.log1p(-1e-6)])
    assert scores[0] > scores[1]


def test_log_score_keeps_float32_and_checks_the_columns():
    query = parse_query("smiling")
    scores = query.log_score(np.full((3, 2), 0.5, dtype=np.float32), ["Male", "Smiling"])
    assert scores.dtype == np.float32 and scores.shape == (3,)
    with pytest.raises(ValueError, match=r"shape \(N, 2\) for 2 attributes, got \(3, 3\)"):
        query.log_score(np.zeros((3, 3)), ["Male", "Smiling"])
    with pytest.raises(ValueError, match=r"asks for Smiling \('smiling'\), which is not among"):
        query.log_score(np.zeros((3, 2)), ["Male", "Young"])


def test_rank_query_returns_the_most_likely_faces_best_first():
    rng = np.random.default_rng(1)
    probabilities = rng.random((1000, 3)).astype(np.float32)
    attributes = ["Male", "Young", "Eyeglasses"]
    query = parse_query("old man wearing glasses", attributes=attributes)
    ranking = rank_query(query, probabilities, attributes, limit=10)
    scores = query.log_score(probabilities, attributes)
    np.testing.assert_array_equal(ranking.rows, np.argsort(-scores, kind="stable")[:10])
    assert np.all(np.diff(ranking.values) <= 0)
    assert len(rank_query(query, probabilities[:4], attributes, limit=10).rows) == 4


def test_rank_query_breaks_ties_by_row_order():
    probabilities = np.full((5000, 1), 0.5)
    probabilities[[4000, 10]] = 0.9
    ranking = rank_query(parse_query("male"), probabilities, ["Male"], limit=5)
    assert ranking.rows.tolist() == [10, 4000, 0, 1, 2]


def test_the_vocabulary_table_of_docs_search_md_is_the_generated_one():
    text = (ROOT / "docs" / "SEARCH.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- vocabulary: start -->\n(.*?)<!-- vocabulary: end -->", text, re.DOTALL)
    assert found, "docs/SEARCH.md lost its vocabulary markers"
    assert found.group(1) == vocabulary_markdown(), (
        "docs/SEARCH.md's table is out of date: paste the output of python -c \"from "
        "mtfap.search.query import vocabulary_markdown; print(vocabulary_markdown(), end='')\"")


def test_the_examples_and_filler_words_of_docs_search_md_are_what_the_parser_does():
    text = (ROOT / "docs" / "SEARCH.md").read_text(encoding="utf-8")
    examples = re.findall(r"^\| `([^`]+)` \| `([^`]+)` \|$", text, re.MULTILINE)
    assert len(examples) >= 5
    for query, conditions in examples:
        assert str(parse_query(query)) == conditions, query
    fillers = text[text.index("**Filler words**"):text.index("**Negations**")]
    assert re.findall(r"`([^`]+)`", fillers) == list(STOP_WORDS)
