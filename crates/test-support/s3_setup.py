# Prepares a MiniStack S3 for one test: an IAM user with an access key (its
# signatures are checked; the root key's are not) and a bucket. Prints the key.
import boto3, json, sys
port, bucket = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
          aws_access_key_id="root", aws_secret_access_key="rootsecret")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="trellis-" + bucket)
iam.put_user_policy(UserName="trellis-" + bucket, PolicyName="all-s3", PolicyDocument=json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="trellis-" + bucket)["AccessKey"]
s3 = boto3.client("s3", **kw)
s3.create_bucket(Bucket=bucket)
print(json.dumps({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}))
