# The original service (Flask 3.0 under gunicorn 21.2), reconstructed from its documented
# behaviour, as the baseline of bench/webapp.sh.
import logging

from flask import Flask, request

app = Flask(__name__)
logging.basicConfig(level=logging.INFO)


@app.route("/")
def hello_world():
    app.logger.info("Hello world endpoint was accessed")
    return "Hello Graylog, my name is Charles!"


@app.route("/health")
def health_check():
    return "healthy", 200


@app.errorhandler(404)
def page_not_found(error):
    app.logger.error(f"Page not found: {request.url}")
    return "404 page not found", 404


@app.errorhandler(500)
def internal_server_error(error):
    app.logger.critical(f"Server error: {error}")
    return "500 internal server error", 500
