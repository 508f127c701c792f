"""The JSON API of `mtfap serve` through FastAPI's test client, on real photos: predictions,
activation maps, search, thumbnails, "similar" searches, and the limits that keep it safe."""

import io
import json
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient
from index_factory import FROZEN, QUERY, lfw_photos
from PIL import Image

from mtfap.applications.index import index_collection
from mtfap.applications.web import create_app
from mtfap.applications.web.app import Upload, UploadMemory

pytestmark = pytest.mark.data

PHOTOS = {"colin_1.jpg": "Colin_Powell_0001", "colin_2.jpg": "Colin_Powell_0002",
          "serena.jpg": "Serena_Williams_0001", "tony.jpg": "Tony_Blair_0001",
          "bush.jpg": "George_W_Bush_0001"}


@pytest.fixture(scope="module")
def collection(lfw_dir, tmp_path_factory):
    """Five LFW photos indexed with detection, and a photo of Colin Powell outside them."""
    base = tmp_path_factory.mktemp("web")
    lfw_photos(lfw_dir, base / "photos", PHOTOS)
    outside = lfw_photos(lfw_dir, base, {"query.jpg": "Colin_Powell_0003"})["query.jpg"]
    db = base / "photos.db"
    index_collection(base / "photos", db, FROZEN, workers=1)
    return base / "photos", db, outside.read_bytes()


@pytest.fixture(scope="module")
def client(collection):
    _, db, _ = collection
    app = create_app(db, model=FROZEN, max_upload_bytes=2_000_000)
    return TestClient(app, base_url="http://127.0.0.1")


@pytest.fixture(scope="module")
def uploaded(client, collection):
    *_, photo = collection
    response = client.post("/predict", files={"image": ("me.jpg", photo, "image/jpeg")})
    assert response.status_code == 200, response.text
    return response.json()


def png_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_a_posted_photo_gets_its_faces_with_boxes_and_40_probabilities(uploaded):
    assert (uploaded["width"], uploaded["height"]) == (125, 125)
    assert uploaded["model"] == FROZEN and len(uploaded["token"]) >= 20
    (face,) = uploaded["faces"]
    left, top, right, bottom = face["box"]
    assert 0 <= left < right <= 125 and 0 <= top < bottom <= 125
    assert len(face["probabilities"]) == 40 and len(face["landmarks"]) == 5
    assert face["probabilities"]["Male"] > 0.5  # Colin Powell
    assert face["decisions"]["Male"] is True


def test_a_photo_can_also_be_the_raw_body(client, collection, uploaded):
    *_, photo = collection
    response = client.post("/predict", content=photo, headers={"content-type": "image/jpeg"})
    assert response.status_code == 200
    assert response.json()["faces"][0]["box"] == uploaded["faces"][0]["box"]


def test_what_is_not_an_image_is_refused_whatever_its_name(client):
    for data in (b"GIF89a but not really", b"", json.dumps({"a": 1}).encode()):
        response = client.post("/predict", files={"image": ("photo.jpg", data, "image/jpeg")})
        assert response.status_code == 415, data
        assert "cannot decode image 'upload'" in response.json()["detail"]


def test_too_many_bytes_or_pixels_are_refused(collection, client):
    *_, photo = collection
    big = photo + b"\0" * 2_000_000
    assert client.post("/predict", files={"image": ("a.jpg", big, "image/jpeg")}
                       ).status_code == 413
    # without a Content-Length the body is counted as it arrives
    response = client.post("/predict", content=iter([big[:1_000_000], big[1_000_000:]]),
                           headers={"content-type": "image/jpeg"})
    assert response.status_code == 413
    _, db, _ = collection
    small = TestClient(create_app(db, model=FROZEN, max_pixels=10_000),
                       base_url="http://127.0.0.1")
    response = small.post("/predict", content=photo, headers={"content-type": "image/jpeg"})
    assert response.status_code == 413 and "15,625 pixels" in response.json()["detail"]


def test_an_activation_map_of_an_uploaded_face_is_a_png(client, uploaded):
    token = uploaded["token"]
    response = client.get("/map", params={"token": token, "face": 0, "attribute": "Smiling"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert min(png_size(response.content)) >= 100
    cam = client.get("/map", params={"token": token, "attribute": "Male", "kind": "cam"})
    assert cam.status_code == 200 and cam.content != response.content
    for params, status in (({"token": token, "attribute": "Smilling"}, 400),
                           ({"token": token, "attribute": "Smiling", "kind": "heat"}, 400),
                           ({"token": token, "face": 3, "attribute": "Smiling"}, 404),
                           ({"token": "x" * 22, "attribute": "Smiling"}, 404)):
        assert client.get("/map", params=params).status_code == status, params


def test_a_search_gives_faces_with_scores_and_thumbnails(client):
    response = client.get("/search", params={"q": QUERY, "limit": 3})
    assert response.status_code == 200
    result = response.json()
    assert result["query"] == "~Young & Male & Eyeglasses" and result["faces_in_index"] == 5
    hits = result["hits"]
    assert len(hits) == 3 and [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["value"] >= hits[1]["value"] >= hits[2]["value"]
    assert set(hits[0]["probabilities"]) == {"Young", "Male", "Eyeglasses"}
    thumbnail = client.get(hits[0]["thumbnail"])
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
    assert max(png_size(thumbnail.content)) <= 160
    assert max(png_size(client.get(hits[0]["thumbnail"], params={"size": 64}).content)) == 64


@pytest.mark.parametrize("query, status, expected", [
    ("old man with glases", 400, "did you mean 'glasses'"),
    ("man or woman", 400, "'or' is not supported"),
    ("", 400, "empty query"),
])
def test_a_malformed_query_gets_400_with_one_line(client, query, status, expected):
    response = client.get("/search", params={"q": query})
    assert response.status_code == status
    assert expected in response.json()["detail"] and "\n" not in response.json()["detail"]


def test_limits_of_the_search_are_checked(client):
    assert client.get("/search", params={"q": "man", "limit": 0}).status_code == 422
    assert client.get("/search", params={"q": "man", "limit": 10_000}).status_code == 422
    assert client.get("/search").status_code == 422


def test_faces_like_an_uploaded_one_and_of_the_same_person(client, uploaded):
    token = uploaded["token"]
    person = client.get("/similar", params={"token": token, "by": "person"}).json()
    assert person["value"] == "distance"
    assert {h["path"] for h in person["hits"]} == {"colin_1.jpg", "colin_2.jpg"}
    like = client.get("/similar", params={"token": token, "limit": 5}).json()
    assert like["value"] == "l1_distance" and len(like["hits"]) == 5
    values = [h["value"] for h in like["hits"]]
    assert values == sorted(values)


def test_thumbnails_are_named_by_face_id_only(client, collection, tmp_path):
    assert client.get("/thumbnail/999999").status_code == 404
    for path in ("/thumbnail/..%2F..%2Fetc%2Fpasswd", "/thumbnail/photos.db",
                 "/thumbnail/1?path=/etc/passwd"):
        response = client.get(path)
        assert response.status_code in (404, 422) or response.content[:2] == b"\xff\xd8", path
        assert b"root:" not in response.content
    # no operation of the API takes a parameter that could name a file
    spec = client.get("/openapi.json").json()
    names = {p["name"] for ops in spec["paths"].values() for op in ops.values()
             for p in op.get("parameters", [])}
    assert names == {"token", "face", "attribute", "kind", "q", "limit", "by", "size", "face_id"}


def test_a_photo_gone_from_the_collection_has_no_thumbnail(collection, tmp_path):
    import shutil
    folder, db, _ = collection
    moved = tmp_path / "photos"
    shutil.copytree(folder, moved)
    client = TestClient(create_app(db, model=FROZEN, root=moved), base_url="http://127.0.0.1")
    hits = client.get("/search", params={"q": "man", "limit": 5}).json()["hits"]
    (moved / hits[0]["path"]).unlink()
    response = client.get(hits[0]["thumbnail"])
    assert response.status_code == 404 and "not found" in response.json()["detail"]
    assert client.get(hits[1]["thumbnail"]).status_code == 200  # the others, from --root


def test_the_api_is_described_by_openapi(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    assert {"/predict", "/search", "/map", "/similar", "/thumbnail/{face_id}",
            "/info"} <= set(paths)
    body = paths["/predict"]["post"]["requestBody"]["content"]
    assert body["multipart/form-data"]["schema"]["properties"]["image"]["format"] == "binary"
    assert "image/png" in paths["/map"]["get"]["responses"]["200"]["content"]
    assert client.get("/docs").status_code == 404  # its page would load scripts from a CDN


def test_only_this_machine_is_answered_and_the_page_loads_nothing_from_elsewhere(client):
    assert client.get("/info", headers={"host": "attacker.example"}).status_code == 400
    assert client.get("/info", headers={"host": "localhost:8000"}).status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers[
        "content-security-policy"]
    html = page.text
    assert re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html) == []
    assert "@import" not in html and "url(" not in html and "//cdn" not in html


def test_info_without_an_index_and_search_refused(collection):
    client = TestClient(create_app(None, model=FROZEN), base_url="http://127.0.0.1")
    info = client.get("/info").json()
    assert info["index"] is None and len(info["attributes"]) == 40
    response = client.get("/search", params={"q": "man"})
    assert response.status_code == 404 and "--db" in response.json()["detail"]


def test_uploads_are_kept_in_memory_within_a_count_and_a_byte_budget():
    from mtfap.applications.analyze import FaceResult

    def upload(size):
        face = FaceResult("upload", 0, (0, 0, 1, 1), 1.0, "hog", np.zeros((5, 2)), ["A"],
                          np.zeros(1), np.zeros(1, bool), np.zeros(1), "m", "1",
                          aligned=np.zeros((size, size, 3), np.uint8))
        return Upload([face])

    memory = UploadMemory(count=2, max_bytes=10_000)
    first, second = memory.add(upload(10)), memory.add(upload(10))
    memory.face(first, 0)  # used: the second is now the oldest
    third = memory.add(upload(10))
    memory.face(first, 0)
    memory.face(third, 0)
    with pytest.raises(Exception, match="expired"):
        memory.face(second, 0)
    memory.add(upload(100))  # 30,000 bytes: over the budget, it pushes out everything else
    with pytest.raises(Exception, match="expired"):
        memory.face(first, 0)


def test_serve_listens_on_this_machine_only_by_default():
    from mtfap.cli import build_parser
    from mtfap.cli.serve import allowed_hosts

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.max_upload_mb == 20
    assert "attacker.example" not in allowed_hosts("127.0.0.1")
    assert allowed_hosts("0.0.0.0") == ("*",)
