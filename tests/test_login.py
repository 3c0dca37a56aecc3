"""Signing in at /accounts/login/ and out (by POST) at /accounts/logout/."""


def test_it_shows_the_login_form(client, db):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    html = response.content.decode()
    assert '<input type="text" name="username"' in html and '<input type="password" name="password"' in html
    assert "csrfmiddlewaretoken" in html
    assert "css/natsite.css" in html


def test_it_signs_in_and_lands_on_the_dashboard(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "password"}, follow=True)
    assert response.redirect_chain[-1][0] == "/"
    assert response.context["user"] == alice
    assert b"<h1>Acme</h1>" in response.content


def test_it_goes_back_to_the_page_asked_for(client, alice):
    asked = client.get("/contacts/?level=warm")
    assert asked["Location"] == "/accounts/login/?next=/contacts/%3Flevel%3Dwarm"
    response = client.post(asked["Location"], {"username": "alice", "password": "password", "next": "/contacts/?level=warm"})
    assert response["Location"] == "/contacts/?level=warm"


def test_it_never_redirects_to_another_site(client, alice):
    response = client.post(
        "/accounts/login/", {"username": "alice", "password": "password", "next": "https://evil.test/"}
    )
    assert response.status_code == 302 and response["Location"] == "/"


def test_it_refuses_a_wrong_password(client, alice):
    response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert b"didn\xe2\x80\x99t match" in response.content
    assert not response.context["user"].is_authenticated


def test_it_escapes_what_was_typed(client, db):
    response = client.post("/accounts/login/", {"username": '"><script>alert(1)</script>', "password": "x"})
    assert b"<script>alert(1)</script>" not in response.content
    assert b"&quot;&gt;&lt;script&gt;" in response.content


def test_it_signs_out_by_post(client, alice):
    client.force_login(alice)
    page = client.get("/").content.decode()
    assert '<form class="logout" method="post" action="/accounts/logout/">' in page

    response = client.post("/accounts/logout/")

    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_it_does_not_sign_out_on_a_get(client, alice):
    client.force_login(alice)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/").status_code == 200


def test_a_user_without_a_workspace_is_told_so(client, db):
    from tests.factories import UserFactory

    client.force_login(UserFactory(username="newcomer"))
    response = client.get("/")
    assert response.status_code == 403
    assert b"No workspace yet" in response.content


def test_its_page_runs_a_bounded_number_of_queries(client, db, django_assert_max_num_queries):
    with django_assert_max_num_queries(2):
        response = client.get("/accounts/login/")
    assert response.status_code == 200
