"""The ceiling: a bare Flask "hello" app, served like authsvc (`ceilings:app`).

It shows how fast this machine serves the least a Flask view can do under the same gunicorn
settings, so that a reader can place the table's figures.
"""

from flask import Flask

app = Flask("hello")


@app.get("/")
def hello() -> str:
    return "Hello, World!"
